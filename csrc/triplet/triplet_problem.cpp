// Setting up a triplet problem (checks, candidates) and running a pass of the per-anchor math
// over its anchors: what the loss (triplet_loss.cpp) and mining (triplet_mine.cpp) share.
#include "triplet/triplet_problem.h"

#include "common/value_check.h"

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

triplet::Rule check_hyperparameters(const char* op, double margin, std::string_view negatives,
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
                            std::string_view negatives, double positive_fraction) {
  TORCH_CHECK_VALUE(query.dim() == 2, "triplet: query_emb must be (Q, D), got shape ",
                    query.sizes());
  TORCH_CHECK_TYPE(query.scalar_type() == at::kFloat || query.scalar_type() == at::kDouble,
                   "triplet: native embeddings must be float32 or float64, got ",
                   query.scalar_type());
  const int64_t dim = query.size(1);
  check_rows("bank_emb", bank, dim);
  check_rows("extra_negatives", extra, dim);
  TORCH_CHECK_TYPE(bank.scalar_type() == query.scalar_type() &&
                       extra.scalar_type() == query.scalar_type(),
                   "triplet: query_emb, bank_emb and extra_negatives must share a dtype, got ",
                   query.scalar_type(), ", ", bank.scalar_type(), ", ", extra.scalar_type());
  check_labels("query_labels", query_labels, query.size(0));
  check_labels("query_indices", query_indices, query.size(0));
  check_labels("bank_labels", bank_labels, bank.size(0));
  check_labels("extra_negative_labels", extra_labels, extra.size(0));
  check_one_device(query, {&query_labels, &query_indices, &bank, &bank_labels, &extra,
                           &extra_labels});
  return check_hyperparameters(op, margin, negatives, positive_fraction);
}

void check_one_device(const at::Tensor& first, std::initializer_list<const at::Tensor*> others) {
  for (const at::Tensor* t : others) {
    TORCH_CHECK_VALUE(t->device() == first.device(), "triplet: every tensor must be on ",
                      first.device(), ", got one on ", t->device());
  }
}

TripletCandidates build_candidates(const at::Tensor& query, const at::Tensor& query_labels,
                                   const at::Tensor& query_indices, const at::Tensor& bank,
                                   const at::Tensor& bank_labels, const at::Tensor& extra,
                                   const at::Tensor& extra_labels, double positive_fraction,
                                   bool squared) {
  TripletCandidates c;
  const at::Tensor candidates = at::cat({bank, extra}).contiguous();
  c.dist = on_device(query, [&](auto device) {
    return squared_distances(device, query.contiguous(), candidates);
  });
  if (!squared) c.dist.sqrt_();
  c.query_labels = query_labels.contiguous();
  c.query_indices = query_indices.contiguous();
  c.labels = at::cat({bank_labels, extra_labels});
  c.num_labelled = bank.size(0);
  c.positive_fraction = positive_fraction;
  // The distances must be finite (a NaN or Inf embedding, or finite ones whose squares
  // overflow the dtype, would make the mining meaningless), and each query's index in the
  // bank must be one of the bank's, or -1. No host sync on CUDA (common/value_check.h).
  check_value(at::isfinite(c.dist).all(),
              std::string("triplet: the embeddings must be finite and their squared distances "
                          "must fit in ") + c10::toString(query.scalar_type()) +
                  " (found NaN or Inf; normalise the embeddings or use float64)",
              [] { return ""; });
  check_value(((c.query_indices >= -1) & (c.query_indices < bank.size(0))).all(),
              "triplet: query_indices must be -1 or an index into bank_emb's " +
                  std::to_string(bank.size(0)) + " rows",
              [&] {
                return c10::str(", got values in [", c.query_indices.min().item<int64_t>(), ", ",
                                c.query_indices.max().item<int64_t>(), "]");
              });
  return c;
}

namespace {

// Positives of the anchor with the most (an upper bound of its kept ones).
int64_t max_positives(const TripletCandidates& c) {
  if (c.query_labels.numel() == 0 || c.num_labelled == 0) return 0;
  const at::Tensor bank_labels = c.labels.narrow(0, 0, c.num_labelled);
  return std::get<2>(at::_unique2(bank_labels, /*sorted=*/false, /*return_inverse=*/false,
                                  /*return_counts=*/true)).max().item<int64_t>();
}

}  // namespace

void run_rows(const TripletArgs& rows) {
  if (rows.candidates.dist.size(0) == 0) return;
  on_device(rows.candidates.dist, [&](auto device) { triplet_rows(device, rows); });
}

// The count pass: rows.counts (Q,) and rows.positive_counts (Q, max positives).
void count_rows(TripletArgs& rows) {
  const TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0);
  rows.pass = triplet::kCount;
  rows.counts = at::zeros({q}, c.query_labels.options());
  rows.positive_counts = at::zeros({q, std::max<int64_t>(max_positives(c), 1)},
                                   rows.counts.options());
  run_rows(rows);
}

}  // namespace fgo
