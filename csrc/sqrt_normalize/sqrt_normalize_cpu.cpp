// sqrt_normalize on the CPU: rows in parallel, each summed in one fixed order.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "sqrt_normalize/sqrt_normalize.h"
#include "sqrt_normalize/sqrt_normalize_math.h"

namespace fgo {

void sqrt_normalize_rows(Cpu, const at::Tensor& y, double eps, const at::Tensor& z) {
  const int64_t rows = y.size(0), d = y.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sqrt_norm_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = y.const_data_ptr<scalar_t>();
    scalar_t* out = z.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* y_row = in + r * d;
        scalar_t* z_row = out + r * d;
        sqrt_norm::signed_sqrt_normalize_row(
            d, acc_t(eps), [&](int64_t k) { return acc_t(y_row[k]); },
            [&](int64_t k, acc_t z) { z_row[k] = static_cast<scalar_t>(z); });
      }
    });
  });
}

void sqrt_normalize_backward_rows(Cpu, const at::Tensor& grad_z, const at::Tensor& y,
                                  const at::Tensor& z, double eps, const at::Tensor& grad_y) {
  const int64_t rows = y.size(0), d = y.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "sqrt_norm_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad_z.const_data_ptr<scalar_t>();
    const scalar_t* in = y.const_data_ptr<scalar_t>();
    const scalar_t* out = z.const_data_ptr<scalar_t>();
    scalar_t* gy = grad_y.data_ptr<scalar_t>();
    const acc_t e = acc_t(eps), root = std::sqrt(e);
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(d, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        // z = s / max(|s|, eps_n): dz -> ds = (dz - z (z . dz)) / |s|, or dz / eps_n clamped.
        acc_t squares = 0, dot = 0;
        for (int64_t k = 0; k < d; ++k) {
          const acc_t s = sqrt_norm::signed_sqrt(acc_t(in[r * d + k]), e, root);
          squares += s * s;
          dot += acc_t(out[r * d + k]) * acc_t(g[r * d + k]);
        }
        const acc_t norm = std::sqrt(squares);
        const bool unit = norm > acc_t(sqrt_norm::kNormEps);
        const acc_t inverse = acc_t(1) / std::max(norm, acc_t(sqrt_norm::kNormEps));
        for (int64_t k = 0; k < d; ++k) {
          const acc_t ds = inverse * (acc_t(g[r * d + k]) -
                                      (unit ? acc_t(out[r * d + k]) * dot : acc_t(0)));
          gy[r * d + k] = static_cast<scalar_t>(
              ds * sqrt_norm::signed_sqrt_slope(acc_t(in[r * d + k]), e));
        }
      }
    });
  });
}

}  // namespace fgo
