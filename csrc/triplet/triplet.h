#pragma once
// Batched hard-negative triplet mining and the fused triplet margin loss (docs/semantics.md §3):
// the entry points bound in bindings.cpp. Anchors are the rows of query_embeddings; the candidates
// are the labelled bank_embeddings rows (positives: same label, not the anchor itself; negatives:
// other labels) followed by the extra_negatives, each labelled by the class it is a negative
// for. In-batch mining is query = bank = the batch.

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <c10/util/string_view.h>
#include <tuple>

#include "common/choice.h"
#include "triplet/triplet_math.h"

namespace fgo {

inline constexpr Choices<triplet::Rule, 4> kTripletNegatives = {{
    {"violating", triplet::kViolating}, {"semihard", triplet::kSemihard},
    {"hardest", triplet::kHardest}, {"all", triplet::kAll}}};

enum class TripletReduction { kMeanNonzero, kMean, kSum };
inline constexpr Choices<TripletReduction, 3> kTripletReductions = {{
    {"mean_nonzero", TripletReduction::kMeanNonzero}, {"mean", TripletReduction::kMean},
    {"sum", TripletReduction::kSum}}};

// Fused loss over an in-batch problem: embeddings (B, D) and extra_negatives (E, D) (E may be
// 0), float16/bfloat16/float32/float64 of one dtype (half types computed in float32),
// L2-normalised inside when `normalize`; labels (B,) and extra_negative_labels (E,) int64.
// Returns (loss, grad_embeddings, grad_extra_negatives, norm): d(loss)/d(embeddings) =
// grad_embeddings / norm (w.r.t. the raw, unnormalised embeddings; norm = 1 where the kernels
// fold the divisor in), empty gradients when !compute_grad. loss and norm are in loss_dtype:
// embeddings' dtype (the default) or the float32 the half types are computed in (what
// autocast asks for).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss(
    const at::Tensor& embeddings, const at::Tensor& labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, c10::string_view negatives,
    double positive_fraction, c10::string_view reduction, bool squared, bool normalize,
    bool compute_grad, std::optional<at::ScalarType> loss_dtype = std::nullopt);

// Mining, on the problem of query_embeddings (Q, D) against bank_embeddings (N, D) and
// extra_negatives (E, D), one floating dtype (half types computed in float32), L2-normalised
// inside when `normalize`; labels int64. query_indices (Q,) int64 is each anchor's index in
// bank_embeddings (excluded from its positives) or -1; undefined, anchor a is bank row a (in-batch mining:
// then query_embeddings.is_same(bank_embeddings) prepares the rows once).
// max_positives bounds every anchor's positives (the bank's largest class; -1: N), sizing the
// per-anchor scratch.
//
// triplet_count: the number of triplets each anchor mines, (Q,) int64.
at::Tensor triplet_count(const at::Tensor& query_embeddings, const at::Tensor& query_labels,
                         const std::optional<at::Tensor>& query_indices,
                         const at::Tensor& bank_embeddings, const at::Tensor& bank_labels,
                         const at::Tensor& extra_negatives, const at::Tensor& extra_negative_labels,
                         double margin, c10::string_view negatives, double positive_fraction,
                         bool squared, bool normalize, int64_t max_positives);

// triplet_mine: the mined triplets (anchor + anchor_offset, positive, negative) int64; a
// negative index >= N is extra_negatives[index - N]. Every triplet (max_triplets < 0,
// per_anchor < 0), or max_triplets of them drawn uniformly without replacement over all
// anchors, or up to per_anchor per anchor drawn with a counter-based generator keyed by (seed,
// anchor + anchor_offset), so chunking does not change them; the order is the documented one.
std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_mine(
    const at::Tensor& query_embeddings, const at::Tensor& query_labels,
    const std::optional<at::Tensor>& query_indices, const at::Tensor& bank_embeddings,
    const at::Tensor& bank_labels, const at::Tensor& extra_negatives,
    const at::Tensor& extra_negative_labels, double margin, c10::string_view negatives,
    double positive_fraction, bool squared, bool normalize, int64_t max_positives,
    int64_t max_triplets, int64_t per_anchor, int64_t seed, int64_t anchor_offset);

}  // namespace fgo
