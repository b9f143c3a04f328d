#pragma once
// The validated inputs of the kernel-pooling device functions, and the device functions.

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/complex.h>

#include "common/device.h"
#include "kernel_pooling/kernel_pooling_math.h"

namespace fgo {

// Validated inputs of the device functions.
struct KernelPoolingArgs {
  at::Tensor x;      // (N, L, C) as given: any strides; float16, bfloat16, float32 or float64
  at::Tensor table;  // (p, 2C + d + 1) int64, contiguous: the sketch table (kernel_pooling_math.h)
  at::Tensor alpha;  // (p + 1,) in the compute dtype; undefined for the sketch blocks alone
  int64_t dim;
  bool normalize;    // signed square root, then L2 normalisation of each row

  int64_t images() const { return x.size(0); }
  int64_t locations() const { return x.size(1); }
  int64_t channels() const { return x.size(2); }
  int64_t order() const { return table.size(0); }
  // The sketches transformed: none for kernel pooling of order 1.
  int64_t sketches() const { return order() >= 2 ? order() : 0; }
  int64_t bins() const { return dim / 2 + 1; }  // rfft bins of a length-dim sketch
  kp::RowLayout layout() const { return {channels(), dim, order(), alpha.defined()}; }
  kp::SketchTable sketch_table() const { return {table.data_ptr<int64_t>(), channels(), dim}; }
  // Half types are computed in float32.
  at::ScalarType compute_type() const { return at::toOpMathType(x.scalar_type()); }
  at::TensorOptions compute_options() const { return x.options().dtype(compute_type()); }
  at::TensorOptions spectra_options() const {
    return x.options().dtype(c10::toComplexType(compute_type()));
  }
};

// A complex tensor's data as interleaved (re, im) scalars, the layout the kernels take.
template <typename scalar_t>
scalar_t* complex_scalars(const at::Tensor& spectra) {
  return reinterpret_cast<scalar_t*>(spectra.data_ptr<c10::complex<scalar_t>>());
}

// Device functions, on N >= 1 images.
//   pool: returns (out (N, D) in x's dtype, blocks (N, D) in the compute dtype): blocks is the
//     row before alpha and the normalisation (kernel_pooling_math.h's RowLayout), with
//     U_i = mean_l irfft(prod_{t<=i} FFT(CS_t(x[n, l]))); out = normalize?(alpha * blocks).
//   backprop: takes the output's gradient (N, D), any strides, and returns dx (x's shape and
//     dtype) and d(alpha) ((p + 1,) in the compute dtype; (0,) without alpha).
std::tuple<at::Tensor, at::Tensor> pool(Cpu, const KernelPoolingArgs& args);
std::tuple<at::Tensor, at::Tensor> backprop(Cpu, const KernelPoolingArgs& args,
                                            const at::Tensor& grad, const at::Tensor& blocks,
                                            const at::Tensor& out);
std::tuple<at::Tensor, at::Tensor> pool(Cuda, const KernelPoolingArgs& args);
std::tuple<at::Tensor, at::Tensor> backprop(Cuda, const KernelPoolingArgs& args,
                                            const at::Tensor& grad, const at::Tensor& blocks,
                                            const at::Tensor& out);

}  // namespace fgo
