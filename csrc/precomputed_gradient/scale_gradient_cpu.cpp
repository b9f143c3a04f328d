// scale_gradient on the CPU: rows in parallel, each element multiplied once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "precomputed_gradient/scale_gradient.h"

namespace fgo {
namespace {

double scalar_at(const at::Tensor& t, int64_t i) {
  return AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "scalar_at",
                                         [&] { return double(t.const_data_ptr<scalar_t>()[i]); });
}

}  // namespace

void scale_gradient_rows(Cpu, const at::Tensor& grad, const at::Tensor& grad_loss,
                         const at::Tensor& norm, const at::Tensor& out) {
  const int64_t rows = grad.size(0), width = rows > 0 ? grad.numel() / rows : 0;
  const bool per_row = grad_loss.dim() == 1;
  const double inv_norm = 1.0 / scalar_at(norm, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                  "scale_gradient_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = grad.const_data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    const acc_t shared = per_row ? acc_t(0) : acc_t(scalar_at(grad_loss, 0) * inv_norm);
    at::parallel_for(0, rows, std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const acc_t factor = per_row ? acc_t(scalar_at(grad_loss, r) * inv_norm) : shared;
        for (int64_t j = r * width; j < (r + 1) * width; ++j) {
          o[j] = static_cast<scalar_t>(static_cast<acc_t>(in[j]) * factor);
        }
      }
    });
  });
}

}  // namespace fgo
