// CPU kernels of kernel pooling: at::parallel_for over (image, location group) work items;
// each thread sketches and transforms its locations a cache-sized chunk at a time (our real
// FFT, common/real_fft.h: its bits never depend on the threads), and keeps only d/2 + 1 bins
// per order and image.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <vector>

#include "common/real_fft.h"
#include "kernel_pooling/kernel_pooling_args.h"
#include "kernel_pooling/kernel_pooling_math.h"

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
  constexpr int64_t width = VectorBins<T>::kWidth;
  int64_t k = 0;
  for (; k + width <= bins; k += width) op.template operator()<VectorBins<T>>(2 * k);
  for (; k < bins; ++k) op.template operator()<kp::ScalarBins<T>>(2 * k);
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
      : hash_(a.hash_index.data_ptr<int64_t>()),
        sign_(a.hash_sign.data_ptr<scalar_t>()),
        order_(a.order()),
        channels_(a.hash_index.size(1)),
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
        const int64_t* h = hash_ + t * channels_;
        const scalar_t* s = sign_ + t * channels_;
        for (int64_t k = 0; k < channels_; ++k) {
          if (s[k] != 0) row[h[k]] += s[k] * xj[k];  // sign 0: not in this sketch, as on CUDA
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
          acc += sign_[t * channels_ + k] * dj[t * dim_ + hash_[t * channels_ + k]];
        }
        dx[j * channels_ + k] = acc;
      }
    }
  }

 private:
  const int64_t* hash_;
  const scalar_t* sign_;
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
void for_each_chunk(const KernelPoolingArgs& a, const Partition& part, bool with_adjoint,
                    const Body& body) {
  const int64_t images = a.x.size(0), locations = a.x.size(1), channels = a.x.size(2);
  const scalar_t* x = a.x.data_ptr<scalar_t>();
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

}  // namespace

at::Tensor pool(Cpu, const KernelPoolingArgs& a) {
  const int64_t images = a.x.size(0), order = a.order(), bins = a.bins();
  const Partition part(a.x.size(1), order, a.dim);
  const at::Tensor partial = at::zeros({images, part.groups, order - 1, bins}, a.spectra_options());
  at::Tensor pooled = at::empty({images, order - 1, a.dim}, a.x.options());
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "kernel_pooling_cpu", [&] {
    scalar_t* partial_data = complex_scalars<scalar_t>(partial);
    for_each_chunk<scalar_t>(a, part, false, [&](ChunkTransform<scalar_t>&, int64_t item,
                                                  int64_t, int64_t, int64_t m,
                                                  const scalar_t* spectra) {
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
                   images * (order - 1), scalar_t(1) / scalar_t(a.x.size(1)));  // the mean
  });
  return pooled;
}

at::Tensor backprop(Cpu, const KernelPoolingArgs& a, const at::Tensor& grad_pooled) {
  const int64_t images = a.x.size(0), order = a.order(), bins = a.bins();
  const int64_t locations = a.x.size(1), channels = a.x.size(2);
  const Partition part(locations, order, a.dim);
  const at::Tensor grad = at::empty({images, order - 1, bins}, a.spectra_options());
  at::Tensor grad_x = at::empty_like(a.x);
  AT_DISPATCH_FLOATING_TYPES(a.x.scalar_type(), "kernel_pooling_backward_cpu", [&] {
    transform_rows(fft::RealFft<scalar_t>::of_length(a.dim), /*inverse=*/false,
                   grad_pooled.data_ptr<scalar_t>(), complex_scalars<scalar_t>(grad),
                   images * (order - 1), scalar_t(1) / scalar_t(locations));
    const scalar_t* grad_data = complex_scalars<scalar_t>(grad);
    scalar_t* dx = grad_x.data_ptr<scalar_t>();
    for_each_chunk<scalar_t>(a, part, true, [&](ChunkTransform<scalar_t>& chunk, int64_t,
                                                 int64_t n, int64_t l, int64_t m,
                                                 const scalar_t* spectra) {
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
  });
  return grad_x;
}

}  // namespace fgo
