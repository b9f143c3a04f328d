// Torch-facing CUDA launcher of kernel pooling (built only in a CUDA build): the kernels of
// kernel_pooling_kernels.cuh with cuFFT through ATen between them, chunks of locations at a
// time, all on the current stream. A step is 5 launches forward and 6 backward (the irfft's
// input is cloned by ATen: cuFFT's c2r overwrites it) whatever N, L and p, for one chunk.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "kernel_pooling/kernel_pooling_args.h"
#include "kernel_pooling/kernel_pooling_kernels.cuh"

namespace fgo {
namespace {

// Scalars in one chunk's sketches (and again in its spectra): 64 MiB of float32, enough
// locations for the FFT batch to fill the GPU while the memory stays bounded. The CUDA
// emulation builds with a small chunk so that its shapes cross chunk boundaries.
#ifndef FGO_KP_CUDA_CHUNK_SCALARS
#define FGO_KP_CUDA_CHUNK_SCALARS (int64_t(1) << 24)
#endif
constexpr int64_t kChunkScalars = FGO_KP_CUDA_CHUNK_SCALARS;

constexpr int64_t kNoNormalization = 0;  // ATen's fft_norm_mode::none: the kernels scale

template <typename In, typename T>
kp::cuda::PoolingParams<In, T> params_of(const KernelPoolingArgs& a) {
  kp::cuda::PoolingParams<In, T> p;
  p.images = a.images();
  p.locations = a.locations();
  p.channels = a.channels();
  p.order = a.order();
  p.sketches = a.sketches();
  p.dim = a.dim;
  p.bins = a.bins();
  p.x = a.x.data_ptr<In>();
  for (int i = 0; i < 3; ++i) p.x_stride[i] = a.x.stride(i);
  p.table = a.sketch_table();
  p.layout = a.layout();
  p.alpha = a.alpha.defined() ? a.alpha.data_ptr<T>() : nullptr;
  p.normalize = a.normalize;
  return p;
}

// Locations per chunk: all of them when the chunk's sketches fit kChunkScalars.
int64_t chunk_rows(const KernelPoolingArgs& a) {
  return std::clamp<int64_t>(kChunkScalars / (a.sketches() * a.dim), 1,
                             a.images() * a.locations());
}

// The rfft of `rows` rows of d real scalars, unscaled (the out= form would copy its result).
at::Tensor rfft_rows(const at::Tensor& real, int64_t rows) {
  return at::_fft_r2c(real.narrow(0, 0, rows), {1}, kNoNormalization, /*onesided=*/true);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> pool(Cuda, const KernelPoolingArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t width = a.layout().width(), order = a.order();
  at::Tensor blocks = at::empty({a.images(), width}, a.compute_options());
  at::Tensor out = at::empty({a.images(), width}, a.x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(),
                                  "kernel_pooling_cuda", [&] {
    using In = scalar_t;
    using T = at::opmath_type<In>;
    const auto p = params_of<In, T>(a);
    at::Tensor inverse;
    if (a.sketches()) {
      TORCH_CHECK(kp::cuda::product_groups<T>(order) >= 1,
                  "kernel_pooling (CUDA): the order p must be at most ",
                  (int64_t(48) << 10) / (kp::cuda::kProductBins * 2 * sizeof(T)) + 1, " in ",
                  a.compute_type(), ", got ", order);
      const int64_t rows = a.images() * a.locations(), chunk = chunk_rows(a);
      const at::Tensor sketch = at::empty({chunk * order, a.dim}, a.compute_options());
      // All d bins of each image's sums: the inverse transform is a complex one, whose input
      // ATen does not clone (its c2r would).
      const at::Tensor spectrum = at::empty({a.images(), order - 1, a.dim}, a.spectra_options());
      for (int64_t first = 0; first < rows; first += chunk) {
        const int64_t m = std::min(chunk, rows - first);
        C10_CUDA_CHECK(kp::cuda::launch_sketch(p, first, m, sketch.data_ptr<T>(), {}, stream));
        const at::Tensor spectra = rfft_rows(sketch, m * order);
        C10_CUDA_CHECK(kp::cuda::launch_accumulate_products(
            p, complex_scalars<T>(spectra), first, m, complex_scalars<T>(spectrum), stream));
      }
      inverse = at::_fft_c2c(spectrum, {2}, kNoNormalization, /*forward=*/false);
    }
    C10_CUDA_CHECK(kp::cuda::launch_finish(
        p, inverse.defined() ? complex_scalars<T>(inverse) : nullptr, blocks.data_ptr<T>(),
        out.data_ptr<In>(), stream));
  });
  return {out, blocks};
}

std::tuple<at::Tensor, at::Tensor> backprop(Cuda, const KernelPoolingArgs& a,
                                            const at::Tensor& grad, const at::Tensor& blocks,
                                            const at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t images = a.images(), order = a.order(), rows = images * a.locations();
  const int64_t alphas = a.alpha.defined() ? order + 1 : 0;
  at::Tensor grad_x = at::empty_like(a.x);  // x's strides where they are dense
  at::Tensor alpha_partial = at::empty({images, alphas}, a.compute_options());
  at::Tensor grad_alpha = at::empty({alphas}, a.compute_options());
  at::Tensor mean_grad = a.layout().dense ? at::empty({images, a.channels()}, a.compute_options())
                                          : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.x.scalar_type(),
                                  "kernel_pooling_backward_cuda", [&] {
    using In = scalar_t;
    using T = at::opmath_type<In>;
    const auto p = params_of<In, T>(a);
    kp::cuda::RowGradients<In, T> g;
    g.images = images;
    g.grad = grad.data_ptr<In>();
    g.grad_stride[0] = grad.stride(0);
    g.grad_stride[1] = grad.stride(1);
    g.out = out.data_ptr<In>();
    g.blocks = blocks.data_ptr<T>();
    g.mean_grad = mean_grad.defined() ? mean_grad.data_ptr<T>() : nullptr;
    g.alpha_partial = alphas ? alpha_partial.data_ptr<T>() : nullptr;
    g.sketch_grad = nullptr;
    const int64_t dx_stride[3] = {grad_x.stride(0), grad_x.stride(1), grad_x.stride(2)};
    T* alpha_out = alphas ? grad_alpha.data_ptr<T>() : nullptr;
    if (!a.sketches()) {  // order 1: the rows' gradients, then the mean block's to every location
      C10_CUDA_CHECK(kp::cuda::launch_sketch(p, 0, 0, static_cast<T*>(nullptr), g, stream));
      C10_CUDA_CHECK(kp::cuda::launch_sketch_adjoint(p, static_cast<const T*>(nullptr), 0, rows,
                                                     g.mean_grad, g.alpha_partial, alpha_out,
                                                     grad_x.data_ptr<In>(), dx_stride, stream));
      return;
    }
    // One buffer of real rows: the chunk's sketches, then (for the first chunk) the rows'
    // gradients dU / (L d), so that one rfft transforms both.
    const int64_t chunk = chunk_rows(a), sketch_rows = chunk * order;
    const int64_t grad_rows = images * (order - 1);
    const at::Tensor real = at::empty({sketch_rows + grad_rows, a.dim}, a.compute_options());
    const at::Tensor adjoint = at::empty({sketch_rows, a.bins()}, a.spectra_options());
    g.sketch_grad = real.data_ptr<T>() + sketch_rows * a.dim;
    at::Tensor first_spectra;  // holds the rows' gradient spectra G after its sketches
    for (int64_t first = 0; first < rows; first += chunk) {
      const int64_t m = std::min(chunk, rows - first);
      kp::cuda::RowGradients<In, T> chunk_g = g;
      if (first > 0) chunk_g.images = 0;
      C10_CUDA_CHECK(kp::cuda::launch_sketch(p, first, m, real.data_ptr<T>(), chunk_g, stream));
      const at::Tensor spectra =
          rfft_rows(real, first == 0 ? sketch_rows + grad_rows : m * order);
      if (first == 0) first_spectra = spectra;
      const T* grad_spectra = complex_scalars<T>(first_spectra) + sketch_rows * a.bins() * 2;
      C10_CUDA_CHECK(kp::cuda::launch_backprop_products(p, complex_scalars<T>(spectra), first, m,
                                                         grad_spectra, complex_scalars<T>(adjoint),
                                                         stream));
      const at::Tensor dsketch =
          at::_fft_c2r(adjoint.narrow(0, 0, m * order), {1}, kNoNormalization, a.dim);
      C10_CUDA_CHECK(kp::cuda::launch_sketch_adjoint(
          p, dsketch.data_ptr<T>(), first, m, g.mean_grad,
          first == 0 ? g.alpha_partial : nullptr, alpha_out, grad_x.data_ptr<In>(), dx_stride,
          stream));
    }
  });
  return {grad_x, grad_alpha};
}

}  // namespace fgo
