// Mining: the count pass, then the write pass of every triplet, of max_triplets drawn over all
// anchors, or of per_anchor drawn per anchor. Draws are Floyd's algorithm over SplitMix64,
// seeded from (seed) or (seed, anchor): the same seed gives the same triplets on every device.
#include <ATen/ATen.h>

#include <algorithm>
#include <unordered_set>
#include <vector>

#include "triplet/triplet_problem.h"

namespace fgo {
namespace {

// splitmix64: a counter-based generator, so each anchor's draw depends only on (seed, anchor).
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) {  // uniform in [0, n)
    const auto wide = static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n);
    return static_cast<int64_t>(wide >> 64);
  }
};

// k distinct values of [0, n) drawn uniformly without replacement (Floyd's algorithm), sorted.
std::vector<int64_t> floyd_sample(int64_t n, int64_t k, SplitMix64& rng) {
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

// Ranks of up to k triplets per anchor, sorted; the anchor's triplets are
// [first_rank[a], first_rank[a] + counts[a]).
at::Tensor sample_per_anchor(const at::Tensor& counts, const at::Tensor& first_rank, int64_t k,
                             int64_t seed, int64_t anchor_offset) {
  const at::Tensor counts_cpu = counts.cpu(), first_cpu = first_rank.cpu();
  const int64_t* n = counts_cpu.data_ptr<int64_t>();
  const int64_t* first = first_cpu.data_ptr<int64_t>();
  std::vector<int64_t> ranks;
  for (int64_t a = 0; a < counts_cpu.numel(); ++a) {
    if (n[a] <= k) {
      for (int64_t i = 0; i < n[a]; ++i) ranks.push_back(first[a] + i);
      continue;
    }
    SplitMix64 rng{static_cast<uint64_t>(seed) ^
                   (static_cast<uint64_t>(a + anchor_offset) * 0xD1B54A32D192ED03ull)};
    for (const int64_t r : floyd_sample(n[a], k, rng)) ranks.push_back(first[a] + r);
  }
  return at::tensor(ranks, at::kLong).to(counts.device());
}

// Checks a mining problem, builds its candidates and runs the count pass.
TripletArgs counted_problem(const char* op, const at::Tensor& query_emb,
                            const at::Tensor& query_labels, const at::Tensor& query_indices,
                            const at::Tensor& bank_emb, const at::Tensor& bank_labels,
                            const at::Tensor& extra_negatives,
                            const at::Tensor& extra_negative_labels, double margin,
                            const std::string& negatives, double positive_fraction,
                            bool squared) {
  TripletArgs rows;
  rows.rule = check_problem(op, query_emb, query_labels, query_indices, bank_emb, bank_labels,
                            extra_negatives, extra_negative_labels, margin, negatives,
                            positive_fraction);
  rows.candidates = build_candidates(query_emb.contiguous(), query_labels, query_indices,
                                     bank_emb.contiguous(), bank_labels,
                                     extra_negatives.contiguous(), extra_negative_labels,
                                     positive_fraction, squared);
  rows.margin = margin;
  count_rows(rows);
  return rows;
}

}  // namespace

at::Tensor triplet_count(const at::Tensor& query_emb, const at::Tensor& query_labels,
                         const at::Tensor& query_indices, const at::Tensor& bank_emb,
                         const at::Tensor& bank_labels, const at::Tensor& extra_negatives,
                         const at::Tensor& extra_negative_labels, double margin,
                         const std::string& negatives, double positive_fraction, bool squared) {
  return counted_problem("triplet_count", query_emb, query_labels, query_indices, bank_emb,
                         bank_labels, extra_negatives, extra_negative_labels, margin, negatives,
                         positive_fraction, squared)
      .counts;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_mine(
    const at::Tensor& query_emb, const at::Tensor& query_labels, const at::Tensor& query_indices,
    const at::Tensor& bank_emb, const at::Tensor& bank_labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, const std::string& negatives,
    double positive_fraction, bool squared, int64_t max_triplets, int64_t per_anchor,
    int64_t seed, int64_t anchor_offset) {
  TORCH_CHECK(max_triplets < 0 || per_anchor < 0,
              "triplet_mine: give either max_triplets or per_anchor, not both");
  TripletArgs rows = counted_problem("triplet_mine", query_emb, query_labels, query_indices,
                                     bank_emb, bank_labels, extra_negatives,
                                     extra_negative_labels, margin, negatives, positive_fraction,
                                     squared);
  const at::Tensor counts = rows.counts;
  const at::Tensor ends = counts.cumsum(0);
  rows.first_rank = ends - counts;
  const int64_t total = counts.numel() > 0 ? ends[-1].item<int64_t>() : 0;
  const at::Tensor bounds = at::cat({rows.first_rank, at::full({1}, total, counts.options())});
  if (max_triplets >= 0 && total > max_triplets) {
    SplitMix64 rng{static_cast<uint64_t>(seed)};
    rows.ranks = at::tensor(floyd_sample(total, max_triplets, rng), at::kLong).to(counts.device());
  } else if (per_anchor >= 0) {
    rows.ranks = sample_per_anchor(counts, rows.first_rank, per_anchor, seed, anchor_offset);
  }
  rows.slot_begin = rows.ranks.defined() ? at::searchsorted(rows.ranks, bounds) : bounds;
  const int64_t n_out = rows.ranks.defined() ? rows.ranks.numel() : total;
  rows.pass = triplet::kWrite;
  rows.anchor_offset = anchor_offset;
  rows.out_anchor = at::empty({n_out}, counts.options());
  rows.out_positive = at::empty({n_out}, counts.options());
  rows.out_negative = at::empty({n_out}, counts.options());
  run_rows(rows);
  return {rows.out_anchor, rows.out_positive, rows.out_negative};
}

}  // namespace fgo
