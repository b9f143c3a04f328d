#pragma once
// Batched hard-negative triplet mining and the fused triplet margin loss (DESIGN section 4).
// Anchors are the rows of `query`; the candidates are the labelled references `refs`
// (positives: same label, not the anchor itself; negatives: other labels) followed by the
// `extra` negatives, each labelled by the class it is a negative for. In-batch mining is
// query = refs = the batch. The per-anchor math is in triplet_anchor.h.

#include <ATen/core/Tensor.h>

#include <tuple>

#include "common/device.h"
#include "triplet/triplet_anchor.h"

namespace fgo {

// Every anchor's candidates: distances by one GEMM; positives and negatives follow from
// the labels inside the per-anchor passes (triplet_anchor.h), so no mask is formed.
struct TripletCandidates {
  at::Tensor dist;          // (Q, R + E) distances (squared or not) to refs, then extras
  at::Tensor query_labels;  // (Q,) int64
  at::Tensor query_self;    // (Q,) int64 each anchor's own ref index, or -1
  at::Tensor labels;        // (R + E,) int64 refs' labels, then the extras'
  int64_t num_labelled;     // R
  double positive_fraction;
};

// Fused loss over an in-batch problem: emb (B, D) float32/float64, labels (B,) int64,
// extra (E, D) and extra_labels (E,) (E may be 0). rule: triplet::Rule; reduction: 0
// mean over triplets with positive loss, 1 mean over mined triplets, 2 sum. Returns
// (loss, grad_emb, grad_extra, norm): the gradients are of the summed loss (empty when
// !compute_grad) and loss = summed loss / norm (norm >= 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss_forward(
    const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& extra,
    const at::Tensor& extra_labels, double margin, int64_t rule, double positive_fraction,
    int64_t reduction, bool squared, bool compute_grad);

// Number of triplets each anchor mines: (Q,) int64. query_self (Q,) int64 is the index of
// each anchor among refs (excluded from its positives) or -1.
at::Tensor triplet_count(const at::Tensor& query, const at::Tensor& query_labels,
                         const at::Tensor& query_self, const at::Tensor& refs,
                         const at::Tensor& ref_labels, const at::Tensor& extra,
                         const at::Tensor& extra_labels, double margin, int64_t rule,
                         double positive_fraction, bool squared);

// The mined triplets (anchor + anchor_offset, positive, negative) int64; a negative index
// >= R is extra[index - R]. Either every triplet (ranks empty, per_anchor < 0), the
// triplets whose ranks (sorted, distinct, over all anchors in order) are given, or up to
// per_anchor triplets per anchor drawn uniformly without replacement with a counter-based
// generator keyed by (seed, anchor + anchor_offset), so chunking does not change them.
std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_mine(
    const at::Tensor& query, const at::Tensor& query_labels, const at::Tensor& query_self,
    const at::Tensor& refs, const at::Tensor& ref_labels, const at::Tensor& extra,
    const at::Tensor& extra_labels, double margin, int64_t rule, double positive_fraction,
    bool squared, const at::Tensor& ranks, int64_t per_anchor, int64_t seed,
    int64_t anchor_offset);

// One pass of triplet_anchor.h over every anchor. Outputs as in triplet::RowsParams.
struct TripletRows {
  TripletCandidates candidates;
  int64_t rule;
  double margin;
  int pass;
  at::Tensor counts;                   // kCount: (Q,) int64
  at::Tensor positive_counts;          // kCount, read by kWrite: (Q, max positives) int64
  at::Tensor row_loss;                 // kLoss: (Q,) float64
  at::Tensor row_nonzero, row_mined;   // kLoss: (Q,) int64
  at::Tensor weights;                  // kLoss: (Q, R + E) zeros in dist's dtype
  at::Tensor first_rank, slot_begin;   // kWrite: (Q,), (Q + 1,) int64
  at::Tensor ranks;                    // kWrite: selected ranks, or undefined for all
  int64_t anchor_offset = 0;
  at::Tensor out_anchor, out_positive, out_negative;
};

// The raw-pointer view of a pass that triplet_anchor.h (and the CUDA kernels) take.
template <typename T>
triplet::RowsParams<T> triplet_rows_params(const TripletRows& rows) {
  triplet::RowsParams<T> p{};
  p.rule = rows.rule;
  p.margin = static_cast<T>(rows.margin);
  p.pass = rows.pass;
  if (rows.positive_counts.defined()) {
    p.positive_counts = rows.positive_counts.data_ptr<int64_t>();
    p.positive_stride = rows.positive_counts.size(1);
  }
  if (rows.pass == triplet::kCount) {
    p.counts = rows.counts.data_ptr<int64_t>();
  } else if (rows.pass == triplet::kLoss) {
    p.row_loss = rows.row_loss.data_ptr<double>();
    p.row_nonzero = rows.row_nonzero.data_ptr<int64_t>();
    p.row_mined = rows.row_mined.data_ptr<int64_t>();
    p.weights = rows.weights.data_ptr<T>();
    p.weight_stride = rows.weights.size(1);
  } else {
    p.first_rank = rows.first_rank.data_ptr<int64_t>();
    p.slot_begin = rows.slot_begin.data_ptr<int64_t>();
    p.ranks = rows.ranks.defined() ? rows.ranks.data_ptr<int64_t>() : nullptr;
    p.anchor_offset = rows.anchor_offset;
    p.out_anchor = rows.out_anchor.data_ptr<int64_t>();
    p.out_positive = rows.out_positive.data_ptr<int64_t>();
    p.out_negative = rows.out_negative.data_ptr<int64_t>();
  }
  return p;
}

void triplet_rows(Cpu, const TripletRows& rows);
void triplet_rows(Cuda, const TripletRows& rows);

}  // namespace fgo
