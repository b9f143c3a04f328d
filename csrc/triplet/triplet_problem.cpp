// Setting up a triplet problem (checks, candidates) and running a pass of the per-anchor math
// over its anchors: what the loss (triplet_loss.cpp) and mining (triplet_mine.cpp) share.
#include "triplet/triplet_problem.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

namespace fgo {
void check_rows(const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == dim, "triplet: ", name, " must be (n, ", dim,
                    "), got shape ", t.sizes());
}

void check_labels(const char* name, const at::Tensor& labels, int64_t n) {
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, "triplet: ", name,
                   " must be int64, got ", labels.scalar_type());
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.size(0) == n, "triplet: ", name, " has ",
                    labels.dim() == 1 ? labels.size(0) : labels.numel(), " entries for ", n,
                    " rows (shape ", labels.sizes(), ")");
}

triplet::Rule check_hyperparameters(const char* op, double margin, c10::string_view negatives,
                                    double positive_fraction) {
  TORCH_CHECK_VALUE(std::isfinite(margin) && margin >= 0.0,
                    "triplet: margin must be finite and >= 0, got ", margin);
  TORCH_CHECK_VALUE(positive_fraction > 0.0 && positive_fraction <= 1.0,
                    "triplet: positive_fraction must be in (0, 1], got ", positive_fraction);
  return parse_choice(op, "negatives", negatives, kTripletNegatives);
}

triplet::Rule check_problem(const char* op, const at::Tensor& query,
                            const at::Tensor& query_labels, const at::Tensor& query_indices,
                            const at::Tensor& bank,
                            const at::Tensor& bank_labels, const at::Tensor& extra,
                            const at::Tensor& extra_labels, double margin,
                            c10::string_view negatives, double positive_fraction) {
  TORCH_CHECK_VALUE(query.dim() == 2, "triplet: query_embeddings must be (Q, D), got shape ",
                    query.sizes());
  const at::ScalarType type = query.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                       type == at::kBFloat16,
                   "triplet: query_embeddings must have dtype in (float16, bfloat16, float32, "
                   "float64), got ", type);
  const int64_t dim = query.size(1);
  check_rows("bank_embeddings", bank, dim);
  check_rows("extra_negatives", extra, dim);
  TORCH_CHECK_TYPE(bank.scalar_type() == query.scalar_type() &&
                       extra.scalar_type() == query.scalar_type(),
                   "triplet: query_embeddings, bank_embeddings and extra_negatives must share a "
                   "dtype, got ", query.scalar_type(), ", ", bank.scalar_type(), ", ", extra.scalar_type());
  check_labels("query_labels", query_labels, query.size(0));
  if (query_indices.defined()) {
    check_labels("query_indices", query_indices, query.size(0));
  } else {
    TORCH_CHECK_VALUE(query.size(0) <= bank.size(0), op, ": without query_indices anchor a is "
                      "bank row a, so query_embeddings' ", query.size(0), " rows need as many bank "
                      "rows, got ", bank.size(0));
  }
  check_labels("bank_labels", bank_labels, bank.size(0));
  check_labels("extra_negative_labels", extra_labels, extra.size(0));
  check_one_device(query, {&query_labels, &query_indices, &bank, &bank_labels, &extra,
                           &extra_labels});  // an undefined query_indices is skipped
  return check_hyperparameters(op, margin, negatives, positive_fraction);
}

void check_one_device(const at::Tensor& first, std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    if (!t->defined()) continue;
    TORCH_CHECK_VALUE(t->device() == first.device(), "triplet: every tensor must be on ",
                      first.device(), ", got one on ", t->device());
  }
}

TripletCandidates build_candidates(const at::Tensor& query, const at::Tensor& query_labels,
                                   const at::Tensor& query_indices, const at::Tensor& bank,
                                   const at::Tensor& bank_labels, const at::Tensor& extra,
                                   const at::Tensor& extra_labels, double positive_fraction,
                                   bool squared, bool normalize) {
  TripletCandidates c;
  // In-batch (the queries are the bank): its rows are prepared once.
  const bool in_batch = query.is_same(bank);
  const int64_t q = query.size(0), n = bank.size(0) + extra.size(0), first = in_batch ? 0 : q;
  c.squared = squared;
  on_device(query, [&](auto device) {
    c.prepared = in_batch ? prepare_rows(device, {bank, extra}, normalize)
                          : prepare_rows(device, {query, bank, extra}, normalize);
    candidate_distances(device, c, c.prepared.y.narrow(0, 0, q), c.prepared.y.narrow(0, first, n),
                        first);
  });
  c.query_indices = query_indices.defined() ? query_indices.contiguous() : query_indices;
  c.query_labels = query_labels.contiguous();
  c.labels = bank_labels.contiguous();
  c.extra_labels = extra_labels.contiguous();
  c.num_labelled = bank.size(0);
  c.positive_fraction = positive_fraction;
  return c;
}

void run_rows(const TripletArgs& rows) {
  if (rows.candidates.dist.size(0) == 0) return;
  on_device(rows.candidates.dist, [&](auto device) { triplet_rows(device, rows); });
}

void count_rows(TripletArgs& rows, int64_t max_positives) {
  TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0);
  rows.pass = triplet::kCount;
  rows.counts = at::empty({q}, c.query_labels.options());
  // No anchor has more positives than the bank has rows.
  const int64_t capacity =
      std::clamp<int64_t>(max_positives, 1, std::max<int64_t>(c.num_labelled, 1));
  rows.positive_counts = at::empty({q, capacity}, rows.counts.options());  // zeroed by the pass
  run_rows(rows);
  c.query_sq_norms = c.candidate_sq_norms = at::Tensor();  // dist holds distances now
}

}  // namespace fgo
