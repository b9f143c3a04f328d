#include "kernel_pooling/kernel_pooling.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>

#include "common/device.h"
#include "common/value_check.h"
#include "kernel_pooling/kernel_pooling_args.h"

namespace fgo {
namespace {

// Hash values, before any kernel indexes memory with them: on the CPU a loop over the p x C
// values (no operator call), on CUDA without a host sync (common/value_check.h).
void check_hash_values(const char* op, const at::Tensor& hash_index, const at::Tensor& hash_sign,
                       int64_t dim) {
  if (hash_index.device().is_cpu()) {
    const int64_t* index = hash_index.data_ptr<int64_t>();
    int64_t low = 0, high = 0;
    for (int64_t i = 0; i < hash_index.numel(); ++i) {
      low = i ? std::min(low, index[i]) : index[i];
      high = i ? std::max(high, index[i]) : index[i];
    }
    TORCH_CHECK_VALUE(hash_index.numel() == 0 || (low >= 0 && high < dim), op,
                      ": hash_index values must be in [0, dim=", dim, "), got min ", low,
                      ", max ", high);
    AT_DISPATCH_FLOATING_TYPES(hash_sign.scalar_type(), "check_hash_sign", [&] {
      const scalar_t* sign = hash_sign.data_ptr<scalar_t>();
      for (int64_t i = 0; i < hash_sign.numel(); ++i) {
        TORCH_CHECK_VALUE(sign[i] == 1 || sign[i] == -1 || sign[i] == 0, op,
                          ": hash_sign values must be +1, -1 or 0, got ", sign[i]);
      }
    });
    return;
  }
  check_value(((hash_index >= 0) & (hash_index < dim)).all(),
              std::string(op) + ": hash_index values must be in [0, dim=" + std::to_string(dim) +
                  ")",
              [] { return ""; });
  check_value(((hash_sign.abs() == 1) | (hash_sign == 0)).all(),
              std::string(op) + ": hash_sign values must be +1, -1 or 0", [] { return ""; });
}

KernelPoolingArgs check_inputs(const char* op, const at::Tensor& x, const at::Tensor& hash_index,
                               const at::Tensor& hash_sign, int64_t dim) {
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be (N, L, C), got shape ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                   ": native x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.size(1) >= 1, op, ": x needs at least one location (L >= 1)");
  TORCH_CHECK_VALUE(dim >= 2, op, ": dim must be >= 2, got ", dim);
  TORCH_CHECK_VALUE(hash_index.dim() == 2 && hash_index.size(0) >= 2 &&
                        hash_index.size(1) == x.size(2),
                    op, ": hash_index must be (p, C) with p >= 2 and C = ", x.size(2),
                    ", got shape ", hash_index.sizes());
  TORCH_CHECK_TYPE(hash_index.scalar_type() == at::kLong, op, ": hash_index must be int64, got ",
                   hash_index.scalar_type());
  TORCH_CHECK_VALUE(hash_sign.sizes() == hash_index.sizes() &&
                        hash_sign.scalar_type() == x.scalar_type(),
                    op, ": hash_sign must match hash_index's shape ", hash_index.sizes(),
                    " and x's dtype ", x.scalar_type(), ", got ", hash_sign.sizes(), " ",
                    hash_sign.scalar_type());
  TORCH_CHECK_VALUE(hash_index.device() == x.device() && hash_sign.device() == x.device(), op,
                    ": x, hash_index and hash_sign must be on one device");
  const at::Tensor index = hash_index.contiguous(), sign = hash_sign.contiguous();
  check_hash_values(op, index, sign, dim);
  return {x.contiguous(), index, sign, dim};
}

}  // namespace

BinLookup bin_lookup(const at::Tensor& hash_index, const at::Tensor& hash_sign, int64_t dim) {
  // A channel left out of a sketch (sign 0) gets the key dim: it sorts past the last bin, so
  // the gather never visits it.
  const at::Tensor key = at::where(hash_sign == 0, dim, hash_index);
  // Every argument named: at::sort(t, true, 1) would bind to sort(t, dim=1, descending=true).
  const auto [keys, channel] = at::sort(key, /*stable=*/true, /*dim=*/1, /*descending=*/false);
  const at::Tensor edges =
      at::arange(dim + 1, hash_index.options()).expand({hash_index.size(0), -1}).contiguous();
  return {at::searchsorted(keys.contiguous(), edges).contiguous(), channel.contiguous(),
          hash_sign.gather(1, channel).contiguous()};
}

at::Tensor kernel_pooling_forward(const at::Tensor& x, const at::Tensor& hash_index,
                                  const at::Tensor& hash_sign, int64_t dim) {
  const KernelPoolingArgs args = check_inputs("kernel_pooling", x, hash_index, hash_sign, dim);
  if (x.size(0) == 0) return at::zeros({0, hash_index.size(0) - 1, dim}, x.options());
  // One inverse transform per image and order; irfft's 1/d makes the estimate unbiased.
  return on_device(x, [&](auto device) { return pool(device, args); });
}

at::Tensor kernel_pooling_backward(const at::Tensor& grad_pooled, const at::Tensor& x,
                                   const at::Tensor& hash_index, const at::Tensor& hash_sign,
                                   int64_t dim) {
  const KernelPoolingArgs args =
      check_inputs("kernel_pooling_backward", x, hash_index, hash_sign, dim);
  const int64_t n = x.size(0), orders = hash_index.size(0) - 1;
  TORCH_CHECK(grad_pooled.sizes() == at::IntArrayRef({n, orders, dim}) &&
                  grad_pooled.scalar_type() == x.scalar_type() &&
                  grad_pooled.device() == x.device(),
              "kernel_pooling_backward: grad must be (", n, ", ", orders, ", ", dim, ") in x's ",
              "dtype and device, got ", grad_pooled.sizes(), " ", grad_pooled.scalar_type());
  if (n == 0) return at::zeros_like(args.x);  // FFT libraries reject empty batches
  const at::Tensor grad = grad_pooled.contiguous();
  return on_device(x, [&](auto device) { return backprop(device, args, grad); });
}

}  // namespace fgo
