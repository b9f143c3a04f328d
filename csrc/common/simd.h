#pragma once
// How the CPU kernels walk a row with SIMD: whole vectors first, then the tail one element at
// a time, one generic body serving both. Which path an element takes depends only on the
// row's length, so the order of every sum, and so its bits, does not depend on the threads.
#include <cstdint>

namespace fgo {
namespace simd {

// body(i, Vector()) at i = 0, width, 2 width, ... while a whole vector fits in n, then
// body(i, Scalar()) for each remaining i: Vector and Scalar tag the path (a vector type and
// its element type, or two policies).
template <typename Vector, typename Scalar, typename Body>
void vectors_then_tail(int64_t n, int64_t width, const Body& body) {
  int64_t i = 0;
  for (; i + width <= n; i += width) body(i, Vector());
  for (; i < n; ++i) body(i, Scalar());
}

}  // namespace simd
}  // namespace fgo
