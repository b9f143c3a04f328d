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

namespace fgo {
namespace kp {

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
