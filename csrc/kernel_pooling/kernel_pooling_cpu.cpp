// CPU kernels of kernel pooling: at::parallel_for over (image, location group) work items;
// each thread sketches and transforms its locations a cache-sized chunk at a time (our real
// FFT, common/real_fft.h: its bits never depend on the threads), and keeps only d/2 + 1 bins
// per order and image.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/real_fft.h"
#include "common/simd.h"
#include "kernel_pooling/kernel_pooling_args.h"
#include "kernel_pooling/kernel_pooling_math.h"
#include "sqrt_normalize/sqrt_normalize_math.h"

namespace fgo {
namespace {

// Scalars in one chunk's sketches (and again in its spectra): 512 KiB of float32.
constexpr int64_t kChunkScalars = int64_t(1) << 17;
constexpr int64_t kMaxGroups = 8;

// kp::Bins policy over at::vec vectors of consecutive complex bins (AVX2: 4 float, 2 double).
template <typename T>
struct VectorBins {
  using Value = at::vec::Vectorized<c10::complex<T>>;
  static constexpr int64_t kWidth = Value::size();
  static Value load(const T* p) { return Value::loadu(p); }
  static void store(T* p, const Value& v) { v.store(p); }
  static Value conj(const Value& v) { return v.conj(); }
  static Value one() { return Value(c10::complex<T>(1, 0)); }
};

// Calls op.template operator()<Bins>(2 * k) for every bin k of a row of `bins`: SIMD vectors
// of bins, then single bins for the tail. Which path a bin takes depends only on `bins`.
template <typename T, typename Op>
void for_each_bin(int64_t bins, const Op& op) {
  simd::vectors_then_tail<VectorBins<T>, kp::ScalarBins<T>>(
      bins, VectorBins<T>::kWidth,
      [&](int64_t k, auto path) { op.template operator()<decltype(path)>(2 * k); });
}

// How an image's locations are split: into `groups` contiguous ranges, one per work item,
// each walked `chunk` locations at a time. It depends on the shapes only, so the order of
// every floating-point sum, and so every bit of the result, is independent of the threads.
struct Partition {
  int64_t locations, chunk, groups;
  Partition(int64_t locations, int64_t order, int64_t dim)
      : locations(locations),
        chunk(std::clamp<int64_t>(kChunkScalars / (order * dim), 1, locations)),
        groups(std::min(kMaxGroups, (locations + chunk - 1) / chunk)) {}
  int64_t begin(int64_t group) const { return group * locations / groups; }
};

// One thread's chunk buffers and the sketch <-> spectrum steps of up to `chunk` locations.
template <typename scalar_t>
class ChunkTransform {
 public:
  ChunkTransform(const KernelPoolingArgs& a, int64_t chunk, bool with_adjoint)
      : table_(a.sketch_table()),
        order_(a.order()),
        channels_(a.channels()),
        dim_(a.dim),
        fft_(fft::RealFft<scalar_t>::of_length(a.dim)),
        sketch_(chunk * order_ * dim_),
        spectra_(chunk * order_ * 2 * a.bins()),
        adjoint_(with_adjoint ? spectra_.size() : 0) {}

  // Spectra (m * p rows of bins (re, im) pairs, location-major) of m locations' sketches.
  const scalar_t* transform(const scalar_t* x, int64_t m) {
    scalar_t* sketch = sketch_.data();
    std::fill(sketch, sketch + m * order_ * dim_, scalar_t(0));
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t* xj = x + j * channels_;
      for (int64_t t = 0; t < order_; ++t) {
        scalar_t* row = sketch + (j * order_ + t) * dim_;
        const int64_t* codes = table_.codes(t);
        for (int64_t k = 0; k < channels_; ++k) {
          if (codes[k] != 0) {  // code 0: not in this sketch
            row[kp::code_index(codes[k])] += kp::code_sign<scalar_t>(codes[k]) * xj[k];
          }
        }
      }
    }
    fft_.forward(sketch, dim_, spectra_.data(), 2 * fft_.bins(), m * order_);
    return spectra_.data();
  }

  // Where backprop writes d(loss)/d(spectra), laid out like transform()'s result.
  scalar_t* adjoint() { return adjoint_.data(); }

  // dx (m rows of C) from the spectra gradients in adjoint(): irfft back to sketch space
  // (cancelling the per-bin factors, see kernel_pooling_args.h), then the count-sketch adjoint.
  void backprop_to_input(int64_t m, scalar_t* dx) {
    scalar_t* dsketch = sketch_.data();
    fft_.inverse(adjoint_.data(), 2 * fft_.bins(), dsketch, dim_, m * order_);
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t* dj = dsketch + j * order_ * dim_;
      for (int64_t k = 0; k < channels_; ++k) {
        scalar_t acc = 0;
        for (int64_t t = 0; t < order_; ++t) {
          const int64_t code = table_.codes(t)[k];
          if (code != 0) acc += kp::code_sign<scalar_t>(code) * dj[t * dim_ + kp::code_index(code)];
        }
        dx[j * channels_ + k] = acc;
      }
    }
  }

 private:
  kp::SketchTable table_;
  int64_t order_, channels_, dim_;
  const fft::RealFft<scalar_t>& fft_;
  std::vector<scalar_t> sketch_, spectra_, adjoint_;
};

// `rows` rows of the real FFT (inverse: of its bins), W rows to a lane group, the groups over
// the threads: every row's bits are its own, whatever the split.
template <typename scalar_t>
void transform_rows(const fft::RealFft<scalar_t>& fft, bool inverse, const scalar_t* in,
                    scalar_t* out, int64_t rows, scalar_t scale) {
  const int64_t bins = 2 * fft.bins(), d = fft.length();
  const int64_t grain = std::max<int64_t>(1, kChunkScalars / (4 * d));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    if (inverse) {
      fft.inverse(in + begin * bins, bins, out + begin * d, d, end - begin, scale);
    } else {
      fft.forward(in + begin * d, d, out + begin * bins, bins, end - begin, scale);
    }
  });
}

// Calls body(chunk, item, n, l, m, spectra) for every chunk of m locations starting at l of
// image n, with work items (n, group) spread over the threads.
template <typename scalar_t, typename Body>
void for_each_chunk(const KernelPoolingArgs& a, const scalar_t* x, const Partition& part,
                    bool with_adjoint, const Body& body) {
  const int64_t images = a.images(), locations = a.locations(), channels = a.channels();
  at::parallel_for(0, images * part.groups, 1, [&](int64_t begin, int64_t end) {
    ChunkTransform<scalar_t> chunk(a, part.chunk, with_adjoint);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / part.groups, g = item % part.groups;
      for (int64_t l = part.begin(g); l < part.begin(g + 1); l += part.chunk) {
        const int64_t m = std::min(part.chunk, part.begin(g + 1) - l);
        body(chunk, item, n, l, m, chunk.transform(x + (n * locations + l) * channels, m));
      }
    }
  });
}


// U (N, p - 1, d) of the contiguous compute-dtype x: the pooled spectra of each work item,
// added in group order, then one inverse transform per image and order (with the mean's 1/L).
template <typename scalar_t>
at::Tensor pool_sketches(const KernelPoolingArgs& a, const at::Tensor& x) {
  const int64_t images = a.images(), order = a.order(), bins = a.bins();
  const Partition part(a.locations(), order, a.dim);
  const at::Tensor partial = at::zeros({images, part.groups, order - 1, bins}, a.spectra_options());
  at::Tensor pooled = at::empty({images, order - 1, a.dim}, a.compute_options());
  scalar_t* partial_data = complex_scalars<scalar_t>(partial);
  for_each_chunk<scalar_t>(a, x.data_ptr<scalar_t>(), part, false,
                           [&](ChunkTransform<scalar_t>&, int64_t item, int64_t, int64_t,
                               int64_t m, const scalar_t* spectra) {
    scalar_t* pooled = partial_data + item * (order - 1) * bins * 2;
    for (int64_t j = 0; j < m; ++j) {
      const scalar_t* location = spectra + j * order * bins * 2;
      for_each_bin<scalar_t>(bins, [&]<typename Bins>(int64_t offset) {
        kp::accumulate_products<Bins>(location + offset, 2 * bins, order, pooled + offset,
                                      2 * bins);
      });
    }
  });
  at::Tensor total = partial.select(1, 0);  // one group: the partial sums are the total
  if (part.groups > 1) total = total.clone();
  for (int64_t g = 1; g < part.groups; ++g) total.add_(partial.select(1, g));
  transform_rows(fft::RealFft<scalar_t>::of_length(a.dim), /*inverse=*/true,
                 complex_scalars<scalar_t>(total), pooled.data_ptr<scalar_t>(),
                 images * (order - 1), scalar_t(1) / scalar_t(a.locations()));  // the mean
  return pooled;
}

// dx (N, L, C) of the sketch blocks alone, from their gradient dU (N, p - 1, d), contiguous.
// dU is transformed to G = rfft(dU) / L, the gradient w.r.t. the pooled spectra without the
// per-bin factors w_k / d of the irfft adjoint (w_k = 2 off DC and Nyquist); the irfft that
// brings the per-location gradients back to sketch space cancels them exactly.
template <typename scalar_t>
at::Tensor backprop_sketches(const KernelPoolingArgs& a, const at::Tensor& x,
                             const at::Tensor& grad_pooled) {
  const int64_t images = a.images(), order = a.order(), bins = a.bins();
  const int64_t locations = a.locations(), channels = a.channels();
  const Partition part(locations, order, a.dim);
  const at::Tensor grad = at::empty({images, order - 1, bins}, a.spectra_options());
  at::Tensor grad_x = at::empty_like(x);
  transform_rows(fft::RealFft<scalar_t>::of_length(a.dim), /*inverse=*/false,
                 grad_pooled.data_ptr<scalar_t>(), complex_scalars<scalar_t>(grad),
                 images * (order - 1), scalar_t(1) / scalar_t(locations));
  const scalar_t* grad_data = complex_scalars<scalar_t>(grad);
  scalar_t* dx = grad_x.data_ptr<scalar_t>();
  for_each_chunk<scalar_t>(a, x.data_ptr<scalar_t>(), part, true,
                           [&](ChunkTransform<scalar_t>& chunk, int64_t, int64_t n, int64_t l,
                               int64_t m, const scalar_t* spectra) {
    const scalar_t* g = grad_data + n * (order - 1) * bins * 2;
    scalar_t* adjoint = chunk.adjoint();
    for (int64_t j = 0; j < m; ++j) {
      const int64_t location = j * order * bins * 2;
      for_each_bin<scalar_t>(bins, [&]<typename Bins>(int64_t offset) {
        kp::backprop_products<Bins>(spectra + location + offset, 2 * bins, order, g + offset,
                                    2 * bins, adjoint + location + offset);
      });
    }
    chunk.backprop_to_input(m, dx + (n * locations + l) * channels);
  });
  return grad_x;
}

// Rows of images in parallel, a few at a time.
template <typename Body>
void for_each_image(int64_t images, int64_t width, const Body& body) {
  at::parallel_for(0, images, std::max<int64_t>(1, 8192 / std::max<int64_t>(width, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) body(n);
  });
}

// The scale of every column: alpha of its block, or 1.
template <typename scalar_t>
scalar_t column_scale(const kp::RowLayout& layout, const scalar_t* alpha, int64_t j) {
  return alpha ? alpha[layout.block(j)] : scalar_t(1);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> pool(Cpu, const KernelPoolingArgs& a) {
  // The chunks read contiguous (N, L, C) rows in the compute dtype, so NCHW maps and half
  // types are converted once here (a no-op for contiguous NLC float): the sketch loop walks
  // one location's channels, which read through NCHW strides would be a cache miss each.
  // The CUDA kernels, whose threads own channels, read the strides and dtype directly.
  const at::Tensor x = a.x.to(a.compute_type()).contiguous();
  const kp::RowLayout layout = a.layout();
  const int64_t images = a.images(), locations = a.locations(), channels = a.channels();
  const int64_t width = layout.width(), sketch_begin = layout.sketch_begin();
  at::Tensor blocks, out = at::empty({images, width}, a.compute_options());
  AT_DISPATCH_FLOATING_TYPES(a.compute_type(), "kernel_pooling_cpu", [&] {
    const at::Tensor pooled = a.sketches() ? pool_sketches<scalar_t>(a, x) : at::Tensor();
    if (!layout.dense) {
      blocks = pooled.view({images, width});
    } else {
      blocks = at::empty({images, width}, a.compute_options());
      if (pooled.defined()) blocks.narrow(1, sketch_begin, width - sketch_begin)
                                .copy_(pooled.view({images, -1}));
      const scalar_t* in = x.data_ptr<scalar_t>();
      scalar_t* b = blocks.data_ptr<scalar_t>();
      for_each_image(images, locations * channels, [&](int64_t n) {
        scalar_t* row = b + n * width;
        row[0] = 1;
        for (int64_t k = 0; k < channels; ++k) row[1 + k] = 0;
        for (int64_t l = 0; l < locations; ++l) {
          const scalar_t* xl = in + (n * locations + l) * channels;
          for (int64_t k = 0; k < channels; ++k) row[1 + k] += xl[k];
        }
        for (int64_t k = 0; k < channels; ++k) row[1 + k] /= scalar_t(locations);
      });
    }
    const scalar_t* alpha = a.alpha.defined() ? a.alpha.data_ptr<scalar_t>() : nullptr;
    const scalar_t* b = blocks.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    for_each_image(images, width, [&](int64_t n) {
      const scalar_t* row = b + n * width;
      scalar_t* z = o + n * width;
      const auto scaled = [&](int64_t j) { return column_scale(layout, alpha, j) * row[j]; };
      if (!a.normalize) {
        for (int64_t j = 0; j < width; ++j) z[j] = scaled(j);
        return;
      }
      sqrt_norm::signed_sqrt_normalize_row(width, scalar_t(kp::kSqrtEps), scaled,
                                           [&](int64_t j, scalar_t value) { z[j] = value; });
    });
  });
  return {out.to(a.x.scalar_type()), blocks};
}

std::tuple<at::Tensor, at::Tensor> backprop(Cpu, const KernelPoolingArgs& a,
                                            const at::Tensor& grad, const at::Tensor& blocks,
                                            const at::Tensor& out) {
  // Contiguous compute-dtype rows, as in pool.
  const at::Tensor x = a.x.to(a.compute_type()).contiguous();
  const at::Tensor g = grad.to(a.compute_type()).contiguous();
  const at::Tensor z = out.to(a.compute_type()).contiguous();
  const kp::RowLayout layout = a.layout();
  const int64_t images = a.images(), locations = a.locations(), channels = a.channels();
  const int64_t width = layout.width(), sketch_begin = layout.sketch_begin();
  const int64_t alphas = a.alpha.defined() ? a.alpha.size(0) : 0;
  at::Tensor grad_blocks = at::empty({images, width}, a.compute_options());
  at::Tensor partial = at::zeros({images, alphas}, a.compute_options());
  at::Tensor grad_alpha = at::zeros({alphas}, a.compute_options());
  at::Tensor grad_x;
  AT_DISPATCH_FLOATING_TYPES(a.compute_type(), "kernel_pooling_backward_cpu", [&] {
    const scalar_t* alpha = alphas ? a.alpha.data_ptr<scalar_t>() : nullptr;
    const scalar_t *gz = g.data_ptr<scalar_t>(), *zz = z.data_ptr<scalar_t>();
    const scalar_t* b = blocks.data_ptr<scalar_t>();
    scalar_t *gb = grad_blocks.data_ptr<scalar_t>(), *part = partial.data_ptr<scalar_t>();
    const scalar_t eps = scalar_t(kp::kSqrtEps), root = std::sqrt(eps);
    for_each_image(images, width, [&](int64_t n) {
      const scalar_t *row = b + n * width, *gr = gz + n * width, *zr = zz + n * width;
      scalar_t squares = 0, dot = 0;
      for (int64_t j = 0; a.normalize && j < width; ++j) {
        const scalar_t s =
            sqrt_norm::signed_sqrt(column_scale(layout, alpha, j) * row[j], eps, root);
        squares += s * s;
        dot += zr[j] * gr[j];
      }
      const scalar_t norm = std::sqrt(squares);
      for (int64_t j = 0; j < width; ++j) {
        const scalar_t scale = column_scale(layout, alpha, j);
        const scalar_t gy = a.normalize
                                ? kp::normalized_grad(gr[j], zr[j], scale * row[j], dot, norm)
                                : gr[j];
        gb[n * width + j] = scale * gy;
        if (alphas) part[n * alphas + layout.block(j)] += gy * row[j];
      }
    });
    scalar_t* ga = grad_alpha.data_ptr<scalar_t>();
    for (int64_t n = 0; n < images; ++n) {
      for (int64_t i = 0; i < alphas; ++i) ga[i] += part[n * alphas + i];
    }
    if (a.sketches()) {
      const at::Tensor grad_pooled = grad_blocks.narrow(1, sketch_begin, width - sketch_begin)
                                         .contiguous().view({images, a.order() - 1, a.dim});
      grad_x = backprop_sketches<scalar_t>(a, x, grad_pooled);
    } else {
      grad_x = at::zeros_like(x);
    }
    if (layout.dense) {  // the mean's gradient, to every location
      scalar_t* dx = grad_x.data_ptr<scalar_t>();
      for_each_image(images, locations * channels, [&](int64_t n) {
        for (int64_t l = 0; l < locations; ++l) {
          for (int64_t k = 0; k < channels; ++k) {
            dx[(n * locations + l) * channels + k] +=
                gb[n * width + 1 + k] / scalar_t(locations);
          }
        }
      });
    }
  });
  // In x's layout where it is dense (the NCHW maps behind an (N, L, C) view), as on CUDA.
  at::Tensor dx = at::empty_like(a.x);
  return {grad_x.strides() == dx.strides() && grad_x.scalar_type() == dx.scalar_type()
              ? grad_x
              : dx.copy_(grad_x),
          grad_alpha};
}

}  // namespace fgo
