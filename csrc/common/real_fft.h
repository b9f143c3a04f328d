#pragma once
// The CPU's real FFT (torch.fft.rfft / irfft semantics) for the kernel-pooling kernels: any
// length d >= 1, float and double, a batch of rows at a time.
//
// Why our own: ATen's CPU FFT (MKL DFTI) rounds differently with the number of threads MKL
// gives a call (rfft of 3 rows of 16 float32 values already differs between 1 and 2 torch
// threads), and it plans every call anew. Here the bits of a row's transform depend on that
// row alone: rows are transformed W at a time in the lanes of an at::vec::Vectorized (W = 8
// floats or 4 doubles with AVX2), every lane by the same operations, a short last group padded
// with zeros. So the result is the same for any batch, any split over threads, any thread
// count (docs/semantics.md §1, determinism).
//
// Algorithm: a Stockham (self-sorting) mixed-radix complex FFT, radices 4, 2, 3 and any other
// prime up to kMaxDirectRadix by a direct DFT, larger primes by Bluestein's chirp-z transform
// on a power-of-two length. An even d goes through a complex transform of d / 2 and the usual
// split into the even and odd samples' spectra; an odd d through a complex transform of d.
// Twiddles are computed once per length in double precision and kept in a process-wide cache.

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace fgo {
namespace fft {

template <typename T>
class ComplexFft;

template <typename T>
class RealFft {
 public:
  using V = at::vec::Vectorized<T>;

  // The plan of length d (built once per d and dtype, then shared; thread-safe).
  static const RealFft& of_length(int64_t d);

  int64_t length() const { return d_; }
  int64_t bins() const { return d_ / 2 + 1; }

  // rfft: `count` rows of d reals (row r at in + r * in_stride) to rows of d / 2 + 1 complex
  // bins as interleaved (re, im) pairs (row r at out + r * out_stride, in scalars), times
  // `scale`.
  void forward(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t count,
               T scale = T(1)) const;
  // irfft with torch's "backward" normalisation (1/d), times `scale`: bins to reals; the
  // imaginary parts of the DC and (even d) Nyquist bins are ignored, as torch's c2r
  // transforms ignore them.
  void inverse(const T* in, int64_t in_stride, T* out, int64_t out_stride, int64_t count,
               T scale = T(1)) const;

  explicit RealFft(int64_t d);
  ~RealFft();

 private:
  int64_t d_;
  std::unique_ptr<const ComplexFft<T>> complex_;  // length d / 2 (even d) or d (odd d)
  std::vector<T> split_re_, split_im_;             // even d: exp(-2 pi i k / d), k = 0..d/2
};

// The transform of a CPU tensor, for the tests: rfft of (R, n) float32/float64 rows to
// (R, n / 2 + 1) complex, or (inverse) irfft of (R, n / 2 + 1) complex rows to (R, n).
at::Tensor real_fft_rows(const at::Tensor& x, bool inverse, int64_t n);

}  // namespace fft
}  // namespace fgo
