#pragma once
// Per-frequency-bin math of kernel pooling, shared by the CPU and the CUDA kernels.
//
// Complex numbers are interleaved (re, im) pairs. A location's spectra hold one row of bins
// per order t = 1..p, `order_stride` scalars apart. The functions below handle one bin, or a
// SIMD vector of consecutive bins: `Bins` says how to load and store a value of type
// Bins::Value (which has + and *) and how to conjugate it, so one copy of the math serves
// the scalar kernels (ScalarBins, also on the GPU) and the CPU's at::vec vectors. Pointers
// point at the first bin handled, in order 1 (spectra) or order 2 (pooled, grad).

#include <cstdint>

#include "common/host_device.h"
#include "sqrt_normalize/sqrt_normalize_math.h"

namespace fgo {
namespace kp {

// The sketch table (docs/semantics.md §2): the hashes of the p count sketches in the two forms
// the kernels read, one int64 row of width 2C + d + 1 per sketch t:
//   [0, C)              code of channel k: s_t(k) (h_t(k) + 1), or 0 where k is left out;
//   [C, C + d + 1)      offsets: bin j holds the entries [start[j], start[j + 1]);
//   [C + d + 1, width)  entries s_t(k) (k + 1) of the channels k of each bin, ascending k
//                       (the last C - start[d] are 0, unused).
// The codes make the count sketch's adjoint (and the CPU sketch) a gather over channels, the
// entries the CUDA sketch a gather over bins.
struct SketchTable {
  const int64_t* data;
  int64_t channels, dim;

  FGO_HOST_DEVICE int64_t width() const { return 2 * channels + dim + 1; }
  FGO_HOST_DEVICE const int64_t* codes(int64_t t) const { return data + t * width(); }
  FGO_HOST_DEVICE const int64_t* starts(int64_t t) const { return codes(t) + channels; }
  FGO_HOST_DEVICE const int64_t* entries(int64_t t) const { return starts(t) + dim + 1; }
};

// A code's bucket (or channel) and sign.
FGO_HOST_DEVICE int64_t code_index(int64_t code) { return (code < 0 ? -code : code) - 1; }
template <typename T>
FGO_HOST_DEVICE T code_sign(int64_t code) {
  return code < 0 ? T(-1) : T(1);
}

// The signed square root's eps in the pooling ops' normalisation (sqrt_normalize's default).
constexpr double kSqrtEps = 1e-12;

// The columns of a pooled row. Kernel pooling (`dense`, with alpha): [1 | mean_l x (C) |
// U_2 .. U_p (d each)], column j scaled by alpha[block(j)]; compact bilinear pooling:
// [U_2 .. U_p], unscaled.
struct RowLayout {
  int64_t channels, dim, order;
  bool dense;

  FGO_HOST_DEVICE int64_t sketch_begin() const { return dense ? 1 + channels : 0; }
  FGO_HOST_DEVICE int64_t width() const { return sketch_begin() + (order - 1) * dim; }
  FGO_HOST_DEVICE int64_t block(int64_t j) const {
    if (j >= sketch_begin()) return 2 + (j - sketch_begin()) / dim;
    return j == 0 ? 0 : 1;
  }
  // The columns of block b: [begin(b), begin(b + 1)).
  FGO_HOST_DEVICE int64_t begin(int64_t b) const {
    if (b >= 2) return sketch_begin() + (b - 2) * dim;
    return b == 0 ? 0 : 1;
  }
};

// Backward of the normalisation of one row, element j: the gradient w.r.t. y_j from the
// output's gradient g_j, with z_j the output, `dot` = sum_j z_j g_j, and `norm` = ||s(y)||
// (z = s(y) / max(norm, eps), as F.normalize; sqrt_normalize's backward).
template <typename T>
FGO_HOST_DEVICE T normalized_grad(T g, T z, T y, T dot, T norm) {
  const bool unit = norm > T(sqrt_norm::kNormEps);
  const T inverse = T(1) / (unit ? norm : T(sqrt_norm::kNormEps));
  return inverse * (g - (unit ? z * dot : T(0))) * sqrt_norm::signed_sqrt_slope(y, T(kSqrtEps));
}

template <typename T>
struct Complex {
  T re, im;
};

template <typename T>
FGO_HOST_DEVICE Complex<T> operator+(Complex<T> a, Complex<T> b) {
  return {a.re + b.re, a.im + b.im};
}

template <typename T>
FGO_HOST_DEVICE Complex<T> operator*(Complex<T> a, Complex<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}

template <typename T>
struct ScalarBins {
  using Value = Complex<T>;
  static FGO_HOST_DEVICE Value load(const T* p) { return {p[0], p[1]}; }
  static FGO_HOST_DEVICE void store(T* p, Value v) {
    p[0] = v.re;
    p[1] = v.im;
  }
  static FGO_HOST_DEVICE Value conj(Value v) { return {v.re, -v.im}; }
  static FGO_HOST_DEVICE Value one() { return {T(1), T(0)}; }
};

// pooled_i += F_1 * ... * F_i for i = 2..order (pooled row i at (i - 2) * pooled_stride).
template <typename Bins, typename T>
FGO_HOST_DEVICE void accumulate_products(const T* spectra, int64_t order_stride, int64_t order,
                                         T* pooled, int64_t pooled_stride) {
  auto product = Bins::load(spectra);
  for (int64_t t = 1; t < order; ++t) {
    product = product * Bins::load(spectra + t * order_stride);
    T* q = pooled + (t - 1) * pooled_stride;
    Bins::store(q, Bins::load(q) + product);
  }
}

// Gradient w.r.t. each F_t of sum_i Re(conj(G_i) * F_1 * ... * F_i), division-free:
//   S_p = G_p,  S_t = G_t + conj(F_{t+1}) S_{t+1} (G_1 = 0),  dF_t = conj(F_1 ... F_{t-1}) S_t.
// `grad` holds G_2..G_order (`grad_stride` apart); dF is written to `adjoint`, laid out like
// `spectra`. The descending pass parks S_t in the output, the ascending one finishes it.
template <typename Bins, typename T>
FGO_HOST_DEVICE void backprop_products(const T* spectra, int64_t order_stride, int64_t order,
                                       const T* grad, int64_t grad_stride, T* adjoint) {
  auto s = Bins::load(grad + (order - 2) * grad_stride);
  for (int64_t t = order; t >= 1; --t) {
    Bins::store(adjoint + (t - 1) * order_stride, s);
    if (t == 1) break;
    s = Bins::conj(Bins::load(spectra + (t - 1) * order_stride)) * s;
    if (t - 1 >= 2) s = s + Bins::load(grad + (t - 3) * grad_stride);
  }
  auto prefix = Bins::one();  // F_1 ... F_{t-1}
  for (int64_t t = 1; t <= order; ++t) {
    T* a = adjoint + (t - 1) * order_stride;
    Bins::store(a, Bins::conj(prefix) * Bins::load(a));
    prefix = prefix * Bins::load(spectra + (t - 1) * order_stride);
  }
}

}  // namespace kp
}  // namespace fgo
