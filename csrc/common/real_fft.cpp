// The CPU real FFT of common/real_fft.h: a Stockham mixed-radix complex FFT over the lanes of
// at::vec::Vectorized (one row per lane), Bluestein's algorithm as the butterfly of large prime
// radices, and the split of an even-length real transform into a half-length complex one.
#include "common/real_fft.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

namespace fgo {
namespace fft {
namespace {

// Primes above this get Bluestein's butterfly: a direct DFT costs R^2 per R outputs.
constexpr int64_t kMaxDirectRadix = 31;

constexpr double kPi = 3.14159265358979323846264338327950288;

// W complex values, one per lane: the rows of a group at one index.
template <typename V>
struct Lanes {
  V re, im;
};

template <typename V>
inline Lanes<V> operator+(const Lanes<V>& a, const Lanes<V>& b) {
  return {a.re + b.re, a.im + b.im};
}
template <typename V>
inline Lanes<V> operator-(const Lanes<V>& a, const Lanes<V>& b) {
  return {a.re - b.re, a.im - b.im};
}
template <typename V>
inline Lanes<V> scaled(const Lanes<V>& a, const V& s) {
  return {a.re * s, a.im * s};
}
// a * (c + i s), the same complex number in every lane.
template <typename V, typename T>
inline Lanes<V> rotated(const Lanes<V>& a, T c, T s) {
  const V vc(c), vs(s);
  return {a.re * vc - a.im * vs, a.re * vs + a.im * vc};
}
template <typename V>
inline Lanes<V> times_minus_i(const Lanes<V>& a) {
  return {a.im, V(0) - a.re};
}
template <typename V>
inline Lanes<V> conj(const Lanes<V>& a) {
  return {a.re, V(0) - a.im};
}

// exp(-2 pi i num / den) in double, num reduced mod den first (exact arguments for large num).
inline void unit_root(int64_t num, int64_t den, double* re, double* im) {
  const double angle = -2.0 * kPi * double(num % den) / double(den);
  *re = std::cos(angle);
  *im = std::sin(angle);
}

int64_t smallest_factor(int64_t n) {
  for (int64_t f = 2; f * f <= n; ++f) {
    if (n % f == 0) return f;
  }
  return n;
}

}  // namespace

// The forward complex DFT of length n (sign -1, unnormalised) of W rows at once, in Lanes.
template <typename T>
class ComplexFft {
 public:
  using V = at::vec::Vectorized<T>;

  explicit ComplexFft(int64_t n) : n_(n) {
    TORCH_CHECK(n >= 1, "fft: length must be >= 1, got ", n);
    for (int64_t rest = n; rest > 1;) {
      const int64_t radix = rest % 4 == 0 ? 4 : smallest_factor(rest);
      radices_.push_back(radix);
      rest /= radix;
    }
    int64_t span = 1;
    for (const int64_t radix : radices_) {
      offsets_.push_back(static_cast<int64_t>(twiddle_re_.size()));
      for (int64_t k = 0; k < span; ++k) {
        for (int64_t r = 1; r < radix; ++r) {  // exp(-2 pi i r k / (span R))
          double re, im;
          unit_root(r * k, span * radix, &re, &im);
          twiddle_re_.push_back(T(re));
          twiddle_im_.push_back(T(im));
        }
      }
      span *= radix;
      if (radix > 4 && radix <= kMaxDirectRadix && !roots_.count(radix)) {
        auto& roots = roots_[radix];
        for (int64_t q = 0; q < radix; ++q) {
          double re, im;
          unit_root(q, radix, &re, &im);
          roots.first.push_back(T(re));
          roots.second.push_back(T(im));
        }
      }
      if (radix > kMaxDirectRadix && !chirps_.count(radix)) chirps_.emplace(radix, Chirp(radix));
      work_ = std::max(work_, radix + (radix > kMaxDirectRadix ? chirps_.at(radix).work() : 0));
    }
  }

  int64_t length() const { return n_; }
  // Lanes of scratch run() needs: n for the ping-pong, then the butterflies' own.
  int64_t scratch() const { return n_ + work_; }

  // Transforms data (n values) in place, using `scratch` (scratch() values).
  void run(Lanes<V>* data, Lanes<V>* scratch) const {
    Lanes<V>* in = data;
    Lanes<V>* out = scratch;
    Lanes<V>* work = scratch + n_;
    int64_t span = 1;
    for (size_t s = 0; s < radices_.size(); ++s) {
      switch (radices_[s]) {
        case 2: stage<2>(span, offsets_[s], in, out, work); break;
        case 3: stage<3>(span, offsets_[s], in, out, work); break;
        case 4: stage<4>(span, offsets_[s], in, out, work); break;
        default: stage<0>(span, offsets_[s], in, out, work, radices_[s]); break;
      }
      std::swap(in, out);
      span *= radices_[s];
    }
    if (in != data) std::copy(in, in + n_, data);
  }

 private:
  // Bluestein's DFT of a prime length R: chirp, circular convolution with the chirp's filter on
  // m >= 2R - 1 points (a power of two), chirp.
  struct Chirp {
    explicit Chirp(int64_t radix) {
      int64_t m = 1;
      while (m < 2 * radix - 1) m *= 2;
      fft = std::make_unique<ComplexFft>(m);
      for (int64_t j = 0; j < radix; ++j) {  // exp(-pi i j^2 / R), j^2 reduced mod 2R
        double re, im;
        unit_root(j * j, 2 * radix, &re, &im);
        chirp_re.push_back(T(re));
        chirp_im.push_back(T(im));
      }
      std::vector<Lanes<V>> filter(m, Lanes<V>{V(0), V(0)}), scratch(fft->scratch());
      for (int64_t j = 0; j < radix; ++j) {  // conj(chirp), circularly: index j and m - j
        filter[j] = {V(chirp_re[j]), V(T(0) - chirp_im[j])};
        if (j > 0) filter[m - j] = filter[j];
      }
      fft->run(filter.data(), scratch.data());
      T lane[V::size()];
      for (int64_t k = 0; k < m; ++k) {  // its spectrum over m (the inverse's normalisation)
        filter[k].re.store(lane);
        filter_re.push_back(lane[0] / T(m));
        filter[k].im.store(lane);
        filter_im.push_back(lane[0] / T(m));
      }
    }
    int64_t work() const { return fft->length() + fft->scratch(); }

    // v (R values) in place; work holds work() values.
    void dft(Lanes<V>* v, int64_t radix, Lanes<V>* work) const {
      const int64_t m = fft->length();
      Lanes<V>* a = work;
      for (int64_t j = 0; j < m; ++j) {
        a[j] = j < radix ? rotated(v[j], chirp_re[j], chirp_im[j]) : Lanes<V>{V(0), V(0)};
      }
      fft->run(a, work + m);
      for (int64_t j = 0; j < m; ++j) a[j] = conj(rotated(a[j], filter_re[j], filter_im[j]));
      fft->run(a, work + m);  // the inverse, as conj(FFT(conj(.)))
      for (int64_t q = 0; q < radix; ++q) {
        v[q] = rotated(conj(a[q]), chirp_re[q], chirp_im[q]);
      }
    }

    std::unique_ptr<ComplexFft> fft;
    std::vector<T> chirp_re, chirp_im, filter_re, filter_im;
  };

  // One Stockham pass of radix R (the template argument, or `radix` when it is 0): the
  // sub-transforms of length span become ones of length span * R, in natural order.
  template <int64_t kRadix>
  void stage(int64_t span, int64_t offset, const Lanes<V>* in, Lanes<V>* out, Lanes<V>* work,
             int64_t radix = kRadix) const {
    const int64_t stride = n_ / radix;
    const T* tw_re = twiddle_re_.data() + offset;
    const T* tw_im = twiddle_im_.data() + offset;
    Lanes<V> fixed[kRadix > 0 ? kRadix : 1];
    Lanes<V>* v = kRadix > 0 ? fixed : work;
    Lanes<V>* butterfly_work = work + radix;
    const Roots* roots = kRadix == 0 && radix <= kMaxDirectRadix ? &roots_.at(radix) : nullptr;
    const Chirp* chirp = kRadix == 0 && radix > kMaxDirectRadix ? &chirps_.at(radix) : nullptr;
    for (int64_t group = 0; group < stride; group += span) {
      for (int64_t k = 0; k < span; ++k) {
        const int64_t j = group + k;
        for (int64_t r = 0; r < radix; ++r) v[r] = in[j + r * stride];
        if (span > 1) {
          const int64_t t = k * (radix - 1) - 1;
          for (int64_t r = 1; r < radix; ++r) v[r] = rotated(v[r], tw_re[t + r], tw_im[t + r]);
        }
        butterfly<kRadix>(v, radix, roots, chirp, butterfly_work);
        Lanes<V>* to = out + group * radix + k;
        for (int64_t r = 0; r < radix; ++r) to[r * span] = v[r];
      }
    }
  }

  using Roots = std::pair<std::vector<T>, std::vector<T>>;  // exp(-2 pi i q / R), q < R

  template <int64_t kRadix>
  void butterfly(Lanes<V>* v, int64_t radix, const Roots* roots, const Chirp* chirp,
                 Lanes<V>* work) const {
    if constexpr (kRadix == 2) {
      const Lanes<V> a = v[0], b = v[1];
      v[0] = a + b;
      v[1] = a - b;
    } else if constexpr (kRadix == 4) {
      const Lanes<V> t0 = v[0] + v[2], t1 = v[0] - v[2];
      const Lanes<V> t2 = v[1] + v[3], t3 = times_minus_i(v[1] - v[3]);
      v[0] = t0 + t2;
      v[1] = t1 + t3;
      v[2] = t0 - t2;
      v[3] = t1 - t3;
    } else if constexpr (kRadix == 3) {
      // v0 + w v1 + w^2 v2, w = exp(-2 pi i / 3) = -1/2 - i sqrt(3)/2
      const V half(T(-0.5)), s(T(-0.86602540378443864676372317075294));
      const Lanes<V> sum = v[1] + v[2], diff = v[1] - v[2];
      const Lanes<V> mid = v[0] + scaled(sum, half);
      const Lanes<V> turn = {V(0) - s * diff.im, s * diff.re};  // i s (v1 - v2)
      v[0] = v[0] + sum;
      v[1] = mid + turn;
      v[2] = mid - turn;
    } else if (roots != nullptr) {
      Lanes<V> y[kMaxDirectRadix];
      for (int64_t q = 0; q < radix; ++q) {
        Lanes<V> acc = v[0];
        for (int64_t r = 1; r < radix; ++r) {
          const int64_t e = (r * q) % radix;
          acc = acc + rotated(v[r], roots->first[e], roots->second[e]);
        }
        y[q] = acc;
      }
      std::copy(y, y + radix, v);
    } else {
      chirp->dft(v, radix, work);
    }
  }

  int64_t n_;
  std::vector<int64_t> radices_, offsets_;
  std::vector<T> twiddle_re_, twiddle_im_;
  std::map<int64_t, Roots> roots_;   // of the direct radices
  std::map<int64_t, Chirp> chirps_;  // of the Bluestein radices
  int64_t work_ = 0;
};

namespace {

// Columns [0, length) of `count` <= W rows (W lanes of a vector of T): full(i, block) moves
// the W x W block at column i through `block` (only when all W rows are there), one(i) the
// single column i (the rest, and partial groups).
template <typename T, typename Full, typename One>
void for_each_column_block(int64_t count, int64_t length, const Full& full, const One& one) {
  constexpr int64_t W = at::vec::Vectorized<T>::size();
  T block[W * W];
  int64_t i = 0;
  if (count == W) {
    for (; i + W <= length; i += W) full(i, block);
  }
  for (; i < length; ++i) one(i);
}

// Up to W rows to lane vectors and back: lanes[i] holds element i of every row (rows past
// `count` read as 0 and are not written). Full blocks are transposed through registers.
template <typename T>
void load_rows(const T* in, int64_t stride, int64_t count, int64_t length,
               at::vec::Vectorized<T>* lanes) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  for_each_column_block<T>(
      count, length,
      [&](int64_t i, T* block) {
        at::vec::transpose_mxn<T, W, W>(in + i, stride, block, W);
        for (int64_t c = 0; c < W; ++c) lanes[i + c] = V::loadu(block + c * W);
      },
      [&](int64_t i) {
        T lane[W] = {};
        for (int64_t r = 0; r < count; ++r) lane[r] = in[r * stride + i];
        lanes[i] = V::loadu(lane);
      });
}

template <typename T>
void store_rows(const at::vec::Vectorized<T>* lanes, int64_t length, T* out, int64_t stride,
                int64_t count) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  for_each_column_block<T>(
      count, length,
      [&](int64_t i, T* block) {
        for (int64_t c = 0; c < W; ++c) lanes[i + c].store(block + c * W);
        at::vec::transpose_mxn<T, W, W>(block, W, out + i, stride);
      },
      [&](int64_t i) {
        T lane[W];
        lanes[i].store(lane);
        for (int64_t r = 0; r < count; ++r) out[r * stride + i] = lane[r];
      });
}

}  // namespace

template <typename T>
RealFft<T>::RealFft(int64_t d) : d_(d) {
  TORCH_CHECK(d >= 1, "fft: length must be >= 1, got ", d);
  complex_ = std::make_unique<ComplexFft<T>>(d % 2 == 0 ? d / 2 : d);
  if (d % 2 == 0) {
    for (int64_t k = 0; k <= d / 2; ++k) {
      double re, im;
      unit_root(k, d, &re, &im);
      split_re_.push_back(T(re));
      split_im_.push_back(T(im));
    }
  }
}

template <typename T>
RealFft<T>::~RealFft() = default;

template <typename T>
const RealFft<T>& RealFft<T>::of_length(int64_t d) {
  static std::mutex mutex;
  static std::map<int64_t, std::unique_ptr<const RealFft>> plans;
  const std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[d];
  if (!plan) plan = std::make_unique<const RealFft>(d);
  return *plan;
}

template <typename T>
void RealFft<T>::forward(const T* in, int64_t in_stride, T* out, int64_t out_stride,
                         int64_t count, T scale) const {
  constexpr int64_t W = V::size();
  const int64_t n = complex_->length(), bins = this->bins();
  std::vector<V> real(std::max(d_, 2 * bins));  // a row's scalars, one row per lane
  std::vector<Lanes<V>> data(n), scratch(complex_->scratch());
  const V half(T(0.5) * scale), factor(scale);
  for (int64_t first = 0; first < count; first += W) {
    const int64_t rows = std::min(W, count - first);
    load_rows(in + first * in_stride, in_stride, rows, d_, real.data());
    if (d_ % 2 == 0) {  // z_j = x_2j + i x_2j+1, Z = FFT_n(z); X_k = E_k + exp(-2 pi i k/d) O_k
      for (int64_t j = 0; j < n; ++j) data[j] = {real[2 * j], real[2 * j + 1]};
      complex_->run(data.data(), scratch.data());
      for (int64_t k = 0; k <= n; ++k) {  // Z_n = Z_0
        const Lanes<V>& z = data[k < n ? k : 0];
        const Lanes<V>& mirror = data[k > 0 ? n - k : 0];
        const Lanes<V> z_mirror = {mirror.re, V(0) - mirror.im};
        const Lanes<V> even = scaled(z + z_mirror, half);
        const Lanes<V> odd = scaled(times_minus_i(z - z_mirror), half);  // (z - z*) / 2i
        const Lanes<V> x = even + rotated(odd, split_re_[k], split_im_[k]);
        real[2 * k] = x.re;
        real[2 * k + 1] = x.im;
      }
    } else {
      for (int64_t j = 0; j < n; ++j) data[j] = {real[j], V(0)};
      complex_->run(data.data(), scratch.data());
      for (int64_t k = 0; k < bins; ++k) {
        real[2 * k] = data[k].re * factor;
        real[2 * k + 1] = data[k].im * factor;
      }
    }
    store_rows(real.data(), 2 * bins, out + first * out_stride, out_stride, rows);
  }
}

template <typename T>
void RealFft<T>::inverse(const T* in, int64_t in_stride, T* out, int64_t out_stride,
                         int64_t count, T scale) const {
  constexpr int64_t W = V::size();
  const int64_t n = complex_->length(), bins = this->bins();
  std::vector<V> real(std::max(d_, 2 * bins));
  std::vector<Lanes<V>> data(n), scratch(complex_->scratch());
  const V factor(scale / T(n)), half(T(0.5));
  for (int64_t first = 0; first < count; first += W) {
    const int64_t rows = std::min(W, count - first);
    load_rows(in + first * in_stride, in_stride, rows, 2 * bins, real.data());
    real[1] = V(0);  // DC's and Nyquist's imaginary parts are dropped, as torch's c2r does
    if (d_ % 2 == 0) real[2 * n + 1] = V(0);
    auto bin = [&](int64_t k) { return Lanes<V>{real[2 * k], real[2 * k + 1]}; };
    if (d_ % 2 == 0) {  // Z_k = E_k + i O_k from X_k and conj(X_{n-k}); z = IFFT_n(Z)
      for (int64_t k = 0; k < n; ++k) {
        const Lanes<V> x = bin(k), x_mirror = conj(bin(n - k));
        const Lanes<V> even = scaled(x + x_mirror, half);
        const Lanes<V> odd =
            rotated(scaled(x - x_mirror, half), split_re_[k], T(0) - split_im_[k]);
        data[k] = conj(even + Lanes<V>{V(0) - odd.im, odd.re});  // conj for the inverse
      }
      complex_->run(data.data(), scratch.data());
      for (int64_t j = 0; j < n; ++j) {  // conj back, over n
        real[2 * j] = data[j].re * factor;
        real[2 * j + 1] = (V(0) - data[j].im) * factor;
      }
    } else {  // the Hermitian spectrum of length d, inverse-transformed; its real part over d
      for (int64_t k = 0; k < bins; ++k) {
        data[k] = conj(bin(k));
        if (k > 0) data[n - k] = bin(k);  // conj(conj(x))
      }
      complex_->run(data.data(), scratch.data());
      for (int64_t j = 0; j < n; ++j) real[j] = data[j].re * factor;
    }
    store_rows(real.data(), d_, out + first * out_stride, out_stride, rows);
  }
}

template class RealFft<float>;
template class RealFft<double>;

at::Tensor real_fft_rows(const at::Tensor& x, bool inverse, int64_t n) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu(), "real_fft_rows: x must be a 2-D CPU tensor");
  TORCH_CHECK(n >= 1 && x.size(1) == (inverse ? n / 2 + 1 : n),
              "real_fft_rows: x must have ", inverse ? n / 2 + 1 : n, " columns, got ", x.size(1));
  const at::Tensor in = x.contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(inverse ? c10::toRealValueType(x.scalar_type()) : x.scalar_type(),
                             "real_fft_rows", [&] {
    const RealFft<scalar_t>& plan = RealFft<scalar_t>::of_length(n);
    const int64_t rows = x.size(0), bins = 2 * plan.bins();
    if (inverse) {
      TORCH_CHECK(x.is_complex(), "real_fft_rows: the inverse takes complex bins");
      out = at::empty({rows, n}, x.options().dtype(c10::CppTypeToScalarType<scalar_t>::value));
      plan.inverse(reinterpret_cast<const scalar_t*>(in.data_ptr()), bins,
                   out.data_ptr<scalar_t>(), n, rows);
    } else {
      out = at::empty({rows, plan.bins()}, x.options().dtype(c10::toComplexType(x.scalar_type())));
      plan.forward(in.data_ptr<scalar_t>(), n, reinterpret_cast<scalar_t*>(out.data_ptr()), bins,
                   rows);
    }
  });
  return out;
}

}  // namespace fft
}  // namespace fgo
