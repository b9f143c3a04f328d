#pragma once
// The validated inputs of the kernel-pooling device functions, the per-bin hash lookup of the
// CUDA count sketch, and the device functions themselves.

#include <ATen/core/Tensor.h>
#include <c10/util/complex.h>

#include "common/device.h"

namespace fgo {

// Validated, contiguous inputs of the device kernels.
struct KernelPoolingArgs {
  at::Tensor x;           // (N, L, C)
  at::Tensor hash_index;  // (p, C) int64 in [0, dim)
  at::Tensor hash_sign;   // (p, C), x's dtype: +-1, or 0 for a channel left out of sketch t
  int64_t dim;

  int64_t order() const { return hash_index.size(0); }
  int64_t bins() const { return dim / 2 + 1; }  // rfft bins of a length-dim sketch
  at::TensorOptions spectra_options() const {
    return x.options().dtype(c10::toComplexType(x.scalar_type()));
  }
};

// The hashes of each sketch grouped by bin (CSR), which makes the count sketch a gather:
// bin j of sketch t holds the channels channel[t][e], with signs sign[t][e], for e in
// [start[t][j], start[t][j + 1]); channels ascend within a bin, and channels with sign 0 are in
// no bin. On the hashes' device.
struct BinLookup {
  at::Tensor start;    // (p, dim + 1) int64
  at::Tensor channel;  // (p, C) int64
  at::Tensor sign;     // (p, C), hash_sign's dtype
};
BinLookup bin_lookup(const at::Tensor& hash_index, const at::Tensor& hash_sign, int64_t dim);

// A complex tensor's data as interleaved (re, im) scalars, the layout the kernels take.
template <typename scalar_t>
scalar_t* complex_scalars(const at::Tensor& spectra) {
  return reinterpret_cast<scalar_t*>(spectra.data_ptr<c10::complex<scalar_t>>());
}

// Device functions. Spectra are complex tensors of the d/2 + 1 rfft bins.
//   pool: returns U (N, p-1, d), the irfft of sum over l of prod_{t<=i} FFT(CS_t(x[n, l])),
//     over L.
//   backprop: takes dU (N, p-1, d), contiguous, and returns dx (N, L, C). It transforms dU to
//     G = rfft(dU) / L, the gradient w.r.t. the sums above without the per-bin factors w_k / d
//     of the irfft adjoint (w_k = 2 off DC and Nyquist); the irfft that brings the
//     per-location gradients back to sketch space cancels them exactly.
at::Tensor pool(Cpu, const KernelPoolingArgs& args);
at::Tensor backprop(Cpu, const KernelPoolingArgs& args, const at::Tensor& grad_pooled);
at::Tensor pool(Cuda, const KernelPoolingArgs& args);
at::Tensor backprop(Cuda, const KernelPoolingArgs& args, const at::Tensor& grad_pooled);

}  // namespace fgo
