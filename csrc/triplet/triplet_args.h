#pragma once
// The validated inputs of the triplet device functions, one pass of the per-anchor math
// (triplet_math.h) over every anchor, and the device functions themselves.

#include <ATen/core/Tensor.h>

#include "common/device.h"
#include "triplet/triplet.h"
#include "triplet/triplet_math.h"

namespace fgo {

// Every anchor's candidates: distances by one GEMM; positives and negatives follow from
// the labels inside the per-anchor passes (triplet_math.h), so no mask is formed.
struct TripletCandidates {
  at::Tensor dist;           // (Q, N + E) distances (squared or not) to the bank, then extras
  at::Tensor query_labels;   // (Q,) int64
  at::Tensor query_indices;  // (Q,) int64 each anchor's own index in the bank, or -1
  at::Tensor labels;         // (N + E,) int64 the bank's labels, then the extras'
  int64_t num_labelled;      // N
  double positive_fraction;
};

// One pass of triplet_math.h over every anchor. Outputs as in triplet::RowsParams.
struct TripletArgs {
  TripletCandidates candidates;
  int64_t rule;
  double margin;
  int pass;
  at::Tensor counts;                   // kCount: (Q,) int64
  at::Tensor positive_counts;          // kCount, read by kWrite: (Q, max positives) int64
  at::Tensor row_loss;                 // kLoss: (Q,) float64
  at::Tensor row_nonzero, row_mined;   // kLoss: (Q,) int64
  at::Tensor weights;                  // kLoss: (Q, N + E) zeros in dist's dtype
  at::Tensor first_rank, slot_begin;   // kWrite: (Q,), (Q + 1,) int64
  at::Tensor ranks;                    // kWrite: selected ranks, or undefined for all
  int64_t anchor_offset = 0;
  at::Tensor out_anchor, out_positive, out_negative;
};

// The raw-pointer view of a pass that triplet_math.h (and the CUDA kernels) take.
template <typename T>
triplet::RowsParams<T> triplet_rows_params(const TripletArgs& rows) {
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

// The fused loss of an in-batch problem (triplet_loss.cpp checks it): its inputs, contiguous,
// in their own dtype, and its outputs, allocated by the entry point (the gradients in the
// inputs' dtype, undefined when not wanted; loss and norm 0-dim in the inputs' dtype).
struct TripletLossArgs {
  at::Tensor emb, labels, extra, extra_labels;
  int64_t rule;
  double margin, positive_fraction;
  TripletReduction reduction;
  bool squared, normalize;
  at::Tensor loss, grad_emb, grad_extra, norm;
};

void triplet_loss(Cpu, const TripletLossArgs& args);
void triplet_loss(Cuda, const TripletLossArgs& args);

void triplet_rows(Cpu, const TripletArgs& rows);
void triplet_rows(Cuda, const TripletArgs& rows);

// (Q, R) squared Euclidean distances between the rows of q (Q, D) and r (R, D), contiguous.
// |q|^2 + |r|^2 - 2 q.r clamped at 0. CPU: our own tiled kernel, every sum in one fixed order,
// so the bits (and the triplets mined from them) do not depend on the number of threads.
// CUDA: one GEMM.
at::Tensor squared_distances(Cpu, const at::Tensor& q, const at::Tensor& r);
at::Tensor squared_distances(Cuda, const at::Tensor& q, const at::Tensor& r);

}  // namespace fgo
