#pragma once
// Kernel pooling (docs/semantics.md §2): the pooled tensor-sketch blocks of orders 2..p,
//   U_i[n] = mean_l IFFT(prod_{t=1..i} FFT(CS_t(x[n, l]))),   i = 2..p,
// computed without ever forming a per-location d-dimensional output: the spectra are summed
// over locations and inverse-transformed once per image and order. The order-0 and order-1
// blocks and the alpha scaling are cheap dense ops done in Python (ops/kernel_pooling.py).

#include <ATen/core/Tensor.h>

namespace fgo {

// Entry points bound in bindings.cpp. They check shapes, dtypes and hash values.
//   x (N, L, C) float32/float64 with L >= 1; hash_index (p, C) int64 in [0, dim) with
//   p >= 2; hash_sign (p, C) of +-1 in x's dtype, or 0 where channel k is
//   left out of sketch t (two-input compact bilinear pooling: docs/semantics.md §2); dim = d >= 2.
// Forward returns U (N, p-1, d). Backward takes dU (N, p-1, d) and returns dx (N, L, C).
at::Tensor kernel_pooling_forward(const at::Tensor& x, const at::Tensor& hash_index,
                                  const at::Tensor& hash_sign, int64_t dim);
at::Tensor kernel_pooling_backward(const at::Tensor& grad_pooled, const at::Tensor& x,
                                   const at::Tensor& hash_index, const at::Tensor& hash_sign,
                                   int64_t dim);

}  // namespace fgo
