// Torch-facing CUDA launcher of kernel pooling (built only in a CUDA build): chunks of
// locations go count sketch (gather kernel) -> batched cuFFT through ATen -> a fused kernel
// for the running spectral product and the per-image sum (forward), or its adjoint followed
// by an inverse cuFFT and the count-sketch adjoint (backward). All on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
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

// Buffers of one call and the chunk loop over the flattened (N * L) locations.
template <typename scalar_t>
class ChunkedSketches {
 public:
  using cuda_params_t = kp::cuda::SketchParams<scalar_t>;

  ChunkedSketches(const KernelPoolingArgs& a, bool with_adjoint) : args_(a) {
    const int64_t order = a.order(), bins = a.bins();
    rows_ = a.x.size(0) * a.x.size(1);
    chunk_ = std::clamp<int64_t>(kChunkScalars / (order * a.dim), 1, rows_);
    // The sketch kernel gathers each bin's channels instead of scattering with atomics.
    bins_ = bin_lookup(a.hash_index, a.hash_sign, a.dim);

    sketch_ = at::empty({chunk_ * order, a.dim}, a.x.options());
    spectra_ = at::empty({chunk_ * order, bins}, a.spectra_options());
    if (with_adjoint) adjoint_ = at::empty({chunk_ * order, bins}, a.spectra_options());

    params_.locations = a.x.size(1);
    params_.channels = a.x.size(2);
    params_.order = order;
    params_.dim = a.dim;
    params_.bins = bins;
    params_.hash_index = a.hash_index.data_ptr<int64_t>();
    params_.hash_sign = a.hash_sign.data_ptr<scalar_t>();
    params_.bin_start = bins_.start.data_ptr<int64_t>();
    params_.bin_channel = bins_.channel.data_ptr<int64_t>();
    params_.bin_sign = bins_.sign.data_ptr<scalar_t>();
  }

  const cuda_params_t& params() const { return params_; }

  // Calls body(first_row, rows, spectra) for each chunk, after sketching and transforming it.
  template <typename Body>
  void for_each_chunk(cudaStream_t stream, const Body& body) {
    const scalar_t* x = args_.x.data_ptr<scalar_t>();
    for (int64_t first = 0; first < rows_; first += chunk_) {
      const int64_t rows = std::min(chunk_, rows_ - first);
      C10_CUDA_CHECK(kp::cuda::launch_count_sketch(params_, x + first * params_.channels, rows,
                                                    sketch_.data_ptr<scalar_t>(), stream));
      at::Tensor spectra = spectra_.narrow(0, 0, rows * params_.order);
      at::fft_rfft_out(spectra, sketch_.narrow(0, 0, rows * params_.order), params_.dim, 1);
      body(first, rows, complex_scalars<scalar_t>(spectra_));
    }
  }

  scalar_t* adjoint() { return complex_scalars<scalar_t>(adjoint_); }

  // The sketch-space gradient (irfft of the adjoint) of `rows` locations, in the sketch buffer.
  const scalar_t* inverse_transform_adjoint(int64_t rows) {
    at::Tensor dsketch = sketch_.narrow(0, 0, rows * params_.order);
    at::fft_irfft_out(dsketch, adjoint_.narrow(0, 0, rows * params_.order), params_.dim, 1);
    return sketch_.data_ptr<scalar_t>();
  }

 private:
  const KernelPoolingArgs& args_;
  int64_t rows_, chunk_;
  BinLookup bins_;
  at::Tensor sketch_, spectra_, adjoint_;
  cuda_params_t params_;
};

}  // namespace

at::Tensor pool(Cuda, const KernelPoolingArgs& a) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor pooled = at::zeros({a.x.size(0), a.order() - 1, a.bins()}, a.spectra_options());
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "kernel_pooling_cuda", [&] {
    TORCH_CHECK(kp::cuda::product_groups<scalar_t>(a.order()) >= 1,
                "kernel_pooling (CUDA): the order p must be at most ",
                (int64_t(48) << 10) / (kp::cuda::kProductBins * 2 * sizeof(scalar_t)) + 1,
                " in ", a.x.scalar_type(), ", got ", a.order());
    ChunkedSketches<scalar_t> chunks(a, /*with_adjoint=*/false);
    scalar_t* out = complex_scalars<scalar_t>(pooled);
    chunks.for_each_chunk(stream, [&](int64_t first, int64_t rows, const scalar_t* spectra) {
      C10_CUDA_CHECK(kp::cuda::launch_accumulate_products(chunks.params(), spectra, first, rows,
                                                           out, stream));
    });
  });
  // One inverse transform per image and order (batched cuFFT).
  return at::fft_irfft(pooled, a.dim, -1).div_(static_cast<double>(a.x.size(1)));
}

at::Tensor backprop(Cuda, const KernelPoolingArgs& a, const at::Tensor& grad_pooled) {
  const c10::cuda::CUDAGuard guard(a.x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor grad = at::fft_rfft(grad_pooled, a.dim, -1).div_(double(a.x.size(1)));
  at::Tensor grad_x = at::empty_like(a.x);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "kernel_pooling_backward_cuda", [&] {
    ChunkedSketches<scalar_t> chunks(a, /*with_adjoint=*/true);
    const scalar_t* g = complex_scalars<scalar_t>(grad);
    scalar_t* dx = grad_x.data_ptr<scalar_t>();
    chunks.for_each_chunk(stream, [&](int64_t first, int64_t rows, const scalar_t* spectra) {
      const auto& p = chunks.params();
      C10_CUDA_CHECK(kp::cuda::launch_backprop_products(p, spectra, first, rows, g,
                                                         chunks.adjoint(), stream));
      const scalar_t* dsketch = chunks.inverse_transform_adjoint(rows);
      C10_CUDA_CHECK(kp::cuda::launch_sketch_adjoint(p, dsketch, rows, dx + first * p.channels,
                                                      stream));
    });
  });
  return grad_x;
}

}  // namespace fgo
