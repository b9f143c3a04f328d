#pragma once
// Kernel pooling (docs/semantics.md §2): the pooled feature of each image,
//   [alpha_0 | alpha_1 mean_l x[n, l] | alpha_i U_i[n] for i = 2..p],
//   U_i[n] = mean_l IFFT(prod_{t=1..i} FFT(CS_t(x[n, l]))),
// optionally signed-square-rooted and L2-normalised; without alpha (compact bilinear pooling)
// the blocks U_2..U_p alone. The spectra are summed over locations and inverse-transformed
// once per image and order, so no per-location d-dimensional output ever exists.

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace fgo {

// Entry points of the ops (kernel_pooling_op.cpp). They check shapes, dtypes and values.
//
// sketch_table: hash_index (p, C) int64 in [0, sketch_dim), hash_sign (p, C) floating of +-1,
//   or 0 where channel k is left out of sketch t -> the (p, 2C + sketch_dim + 1) int64 table
//   the kernels read (kernel_pooling_math.h), on the hashes' device. A module builds it once.
at::Tensor sketch_table(const at::Tensor& hash_index, const at::Tensor& hash_sign,
                        int64_t sketch_dim);

// kernel_pooling: x (N, L, C) floating, L >= 1, any strides; table from sketch_table with
//   p >= 1 (p >= 2 without alpha); alpha (p + 1,) floating or none; sketch_dim = d >= 2.
//   Returns (out, blocks), both (N, D): out in x's dtype, blocks (the row before alpha and the
//   normalisation, which the backward reads) in the compute dtype. D = 1 + C + (p - 1) d
//   with alpha, (p - 1) d without.
std::tuple<at::Tensor, at::Tensor> kernel_pooling(const at::Tensor& x, const at::Tensor& table,
                                                  const std::optional<at::Tensor>& alpha,
                                                  int64_t sketch_dim, bool normalize);

// kernel_pooling_backward: the gradient (N, D) of out, any strides, and the forward's inputs
//   and outputs -> (dx in x's shape and dtype, d(alpha) in alpha's dtype, (0,) without alpha).
std::tuple<at::Tensor, at::Tensor> kernel_pooling_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& table,
    const std::optional<at::Tensor>& alpha, const at::Tensor& blocks, const at::Tensor& out,
    int64_t sketch_dim, bool normalize);

}  // namespace fgo
