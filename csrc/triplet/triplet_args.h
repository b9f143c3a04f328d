#pragma once
// The validated inputs of the triplet device functions, one pass of the per-anchor math
// (triplet_math.h) over every anchor, and the device functions themselves.

#include <ATen/core/Tensor.h>

#include "common/device.h"
#include "triplet/triplet.h"
#include "triplet/triplet_math.h"

namespace fgo {

// The rows of up to three inputs stacked (rows, D) in the compute type (float32 for half
// types), L2-normalised when asked; lengths: each row's norm before that; sq_norms: CUDA only,
// |y|^2 of the rows (the CPU's distance kernel sums its own, in its fixed order).
struct PreparedRows {
  at::Tensor y, lengths, sq_norms;
};

PreparedRows prepare_rows(Cpu, at::ArrayRef<at::Tensor> parts, bool normalize);
PreparedRows prepare_rows(Cuda, at::ArrayRef<at::Tensor> parts, bool normalize);

// Every anchor's candidates: distances by one GEMM; positives and negatives follow from
// the labels inside the per-anchor passes (triplet_math.h), so no mask is formed.
struct TripletCandidates {
  // The queries' rows first unless they are the bank, then the bank's and the extras'.
  PreparedRows prepared;
  at::Tensor dist;           // (Q, N + E) distances (squared or not) to the bank, then extras
  // CUDA: when defined, dist holds the inner products <q, c> instead, and the next pass turns
  // them into distances in place (triplet_kernels.cuh, step 0).
  at::Tensor query_sq_norms, candidate_sq_norms;  // (Q,), (N + E,) |q|^2, |c|^2
  bool squared = true;
  at::Tensor query_labels;   // (Q,) int64
  at::Tensor query_indices;  // (Q,) int64 each anchor's own index in the bank, or -1;
                             // undefined: anchor a is bank row a
  at::Tensor labels;         // (N,) int64 the bank's labels
  at::Tensor extra_labels;   // (E,) int64 the extras'
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
  at::Tensor ends;                     // kWrite: (Q,) int64 inclusive prefix sums of counts
  at::Tensor ranks;                    // kWrite: selected ranks, or undefined for all
  int64_t per_anchor = -1;             // kCount, kWrite: see triplet::RowsParams
  uint64_t seed = 0;
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
  p.per_anchor = rows.per_anchor;
  if (rows.pass == triplet::kCount) {
    p.counts = rows.counts.data_ptr<int64_t>();
  } else if (rows.pass == triplet::kLoss) {
    p.row_loss = rows.row_loss.data_ptr<double>();
    p.row_nonzero = rows.row_nonzero.data_ptr<int64_t>();
    p.row_mined = rows.row_mined.data_ptr<int64_t>();
    p.weights = rows.weights.data_ptr<T>();
    p.weight_stride = rows.weights.size(1);
  } else {
    p.counts = rows.counts.data_ptr<int64_t>();
    p.ends = rows.ends.data_ptr<int64_t>();
    p.ranks = rows.ranks.defined() ? rows.ranks.data_ptr<int64_t>() : nullptr;
    p.num_ranks = rows.ranks.defined() ? rows.ranks.numel() : 0;
    p.seed = rows.seed;
    p.anchor_offset = rows.anchor_offset;
    p.out_anchor = rows.out_anchor.data_ptr<int64_t>();
    p.out_positive = rows.out_positive.data_ptr<int64_t>();
    p.out_negative = rows.out_negative.data_ptr<int64_t>();
  }
  return p;
}

// The fused loss of an in-batch problem (triplet_loss.cpp checks it): its inputs, contiguous,
// in their own dtype, and its outputs, allocated by the entry point (the gradients in the
// inputs' dtype, undefined when not wanted; loss and norm 0-dim in the inputs' dtype or, for
// the half types, float32).
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

// (Q, R) squared Euclidean distances between the rows of q (Q, D) and r (R, D), contiguous:
// |q|^2 + |r|^2 - 2 q.r clamped at 0, by our own tiled kernel, every sum in one fixed order, so
// the bits (and the triplets mined from them) do not depend on the number of threads. (CUDA
// forms them from one GEMM inside the first pass: TripletCandidates.)
at::Tensor squared_distances(Cpu, const at::Tensor& q, const at::Tensor& r);

}  // namespace fgo
