// Mining: the count pass, then the write pass of every triplet, of max_triplets drawn over all
// anchors (here, on the host), or of per_anchor drawn per anchor (by the write pass itself).
// Draws are Floyd's algorithm over SplitMix64 (triplet_math.h), seeded from (seed) or (seed,
// anchor): the same seed gives the same triplets on every device.
#include <ATen/ATen.h>

#include <algorithm>
#include <unordered_set>
#include <vector>

#include "triplet/triplet_problem.h"

namespace fgo {
namespace {

// k distinct values of [0, n) drawn uniformly without replacement (Floyd's algorithm), sorted.
std::vector<int64_t> floyd_sample(int64_t n, int64_t k, triplet::SplitMix64& rng) {
  std::unordered_set<int64_t> chosen(static_cast<size_t>(2 * k));
  std::vector<int64_t> picks;
  picks.reserve(static_cast<size_t>(k));
  for (int64_t t = n - k; t < n; ++t) {
    const int64_t r = rng.below(t + 1);
    const int64_t pick = chosen.count(r) ? t : r;  // t is above every earlier pick
    chosen.insert(pick);
    picks.push_back(pick);
  }
  std::sort(picks.begin(), picks.end());
  return picks;
}

// Checks a mining problem, builds its candidates and runs the count pass.
TripletArgs counted_problem(const char* op, const at::Tensor& query_embeddings,
                            const at::Tensor& query_labels, const at::Tensor& query_indices,
                            const at::Tensor& bank_embeddings, const at::Tensor& bank_labels,
                            const at::Tensor& extra_negatives,
                            const at::Tensor& extra_negative_labels, double margin,
                            c10::string_view negatives, double positive_fraction, bool squared,
                            bool normalize, int64_t max_positives, int64_t per_anchor) {
  TripletArgs rows;
  rows.rule = check_problem(op, query_embeddings, query_labels, query_indices, bank_embeddings,
                            bank_labels, extra_negatives, extra_negative_labels, margin,
                            negatives, positive_fraction);
  TORCH_CHECK_VALUE(max_positives >= -1, op, ": max_positives must be -1 or >= 0, got ",
                    max_positives);
  rows.candidates = build_candidates(query_embeddings, query_labels, query_indices,
                                     bank_embeddings, bank_labels, extra_negatives,
                                     extra_negative_labels, positive_fraction, squared, normalize);
  rows.margin = margin;
  rows.per_anchor = per_anchor;
  count_rows(rows, max_positives >= 0 ? max_positives : bank_embeddings.size(0));
  return rows;
}

}  // namespace

at::Tensor triplet_count(const at::Tensor& query_embeddings, const at::Tensor& query_labels,
                         const std::optional<at::Tensor>& query_indices,
                         const at::Tensor& bank_embeddings, const at::Tensor& bank_labels,
                         const at::Tensor& extra_negatives, const at::Tensor& extra_negative_labels,
                         double margin, c10::string_view negatives, double positive_fraction,
                         bool squared, bool normalize, int64_t max_positives) {
  return counted_problem("triplet_count", query_embeddings, query_labels,
                         query_indices.value_or(at::Tensor()), bank_embeddings,
                         bank_labels, extra_negatives, extra_negative_labels, margin, negatives,
                         positive_fraction, squared, normalize, max_positives, -1)
      .counts;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_mine(
    const at::Tensor& query_embeddings, const at::Tensor& query_labels,
    const std::optional<at::Tensor>& query_indices, const at::Tensor& bank_embeddings,
    const at::Tensor& bank_labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, c10::string_view negatives,
    double positive_fraction, bool squared, bool normalize, int64_t max_positives,
    int64_t max_triplets, int64_t per_anchor, int64_t seed, int64_t anchor_offset) {
  TORCH_CHECK_VALUE(max_triplets < 0 || per_anchor < 0,
                    "triplet_mine: give either max_triplets or per_anchor, not both");
  TORCH_CHECK_VALUE(max_triplets >= -1 && per_anchor >= -1, "triplet_mine: max_triplets and "
                    "per_anchor must be -1 (off) or >= 0, got ", max_triplets, ", ", per_anchor);
  TripletArgs rows = counted_problem("triplet_mine", query_embeddings, query_labels,
                                     query_indices.value_or(at::Tensor()),
                                     bank_embeddings, bank_labels, extra_negatives,
                                     extra_negative_labels, margin, negatives, positive_fraction,
                                     squared, normalize, max_positives, per_anchor);
  // Each anchor's slots follow from the prefix sums of the counts; their total is the one
  // value read back (the outputs' length).
  const at::Tensor& counts = rows.counts;
  rows.ends = counts.cumsum(0);
  const int64_t total = counts.numel() > 0 ? rows.ends[-1].item<int64_t>() : 0;
  int64_t n_out = total;
  if (max_triplets >= 0 && total > max_triplets) {
    triplet::SplitMix64 rng{static_cast<uint64_t>(seed)};
    rows.ranks = at::tensor(floyd_sample(total, max_triplets, rng), at::kLong).to(counts.device());
    n_out = max_triplets;
  } else if (per_anchor >= 0) {
    rows.ranks = at::empty({total}, counts.options());  // each anchor draws its own
  }
  rows.seed = static_cast<uint64_t>(seed);
  rows.pass = triplet::kWrite;
  rows.anchor_offset = anchor_offset;
  rows.out_anchor = at::empty({n_out}, counts.options());
  rows.out_positive = at::empty({n_out}, counts.options());
  rows.out_negative = at::empty({n_out}, counts.options());
  // Nothing to write (and an empty ranks tensor has no data: the pass would read "every").
  if (n_out > 0) run_rows(rows);
  return {rows.out_anchor, rows.out_positive, rows.out_negative};
}

}  // namespace fgo
