#include "kernel_pooling/kernel_pooling.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "common/device.h"
#include "common/value_check.h"
#include "kernel_pooling/kernel_pooling_args.h"

namespace fgo {
namespace {

// Hash values, before a table is built from them: on the CPU a loop over the p x C values (no
// operator call), on CUDA without a host sync (common/value_check.h).
void check_hash_values(const at::Tensor& hash_index, const at::Tensor& hash_sign,
                       int64_t sketch_dim) {
  constexpr const char* kOp = "sketch_table";
  if (hash_index.device().is_cpu()) {
    const int64_t* index = hash_index.data_ptr<int64_t>();
    int64_t low = 0, high = 0;
    for (int64_t i = 0; i < hash_index.numel(); ++i) {
      low = i ? std::min(low, index[i]) : index[i];
      high = i ? std::max(high, index[i]) : index[i];
    }
    TORCH_CHECK_VALUE(hash_index.numel() == 0 || (low >= 0 && high < sketch_dim), kOp,
                      ": hash_index values must be in [0, sketch_dim=", sketch_dim,
                      "), got min ", low,
                      ", max ", high);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, hash_sign.scalar_type(),
                                    "check_hash_sign", [&] {
      const scalar_t* sign = hash_sign.data_ptr<scalar_t>();
      for (int64_t i = 0; i < hash_sign.numel(); ++i) {
        const float s = static_cast<float>(sign[i]);
        TORCH_CHECK_VALUE(s == 1 || s == -1 || s == 0, kOp,
                          ": hash_sign values must be +1, -1 or 0, got ", s);
      }
    });
    return;
  }
  check_value(((hash_index >= 0) & (hash_index < sketch_dim)).all(),
              std::string(kOp) + ": hash_index values must be in [0, sketch_dim=" +
                  std::to_string(sketch_dim) + ")",
              [] { return ""; });
  check_value(((hash_sign.abs() == 1) | (hash_sign == 0)).all(),
              std::string(kOp) + ": hash_sign values must be +1, -1 or 0", [] { return ""; });
}

// A CPU table's values, in one pass (the CUDA kernels guard every value they index with). Each
// row must be what sketch_table builds: codes in [-sketch_dim, sketch_dim], offsets from 0 up
// to the number
// of channels in a sketch, and each bin's entries the channels whose code names that bin.
void check_table_values(const char* op, const at::Tensor& table, int64_t channels,
                        int64_t sketch_dim) {
  const kp::SketchTable t{table.data_ptr<int64_t>(), channels, sketch_dim};
  const auto fail = [&](int64_t row, const char* what) {
    TORCH_CHECK_VALUE(false, op, ": row ", row, " of sketch_table is not a count sketch's table (",
                      what, "); build it with sketch_table(hash_index, hash_sign, sketch_dim=",
                      sketch_dim,
                      ")");
  };
  std::vector<bool> listed(channels);
  for (int64_t row = 0; row < table.size(0); ++row) {
    const int64_t *codes = t.codes(row), *starts = t.starts(row), *entries = t.entries(row);
    std::fill(listed.begin(), listed.end(), false);
    int64_t in_sketch = 0;
    for (int64_t k = 0; k < channels; ++k) {
      if (codes[k] < -sketch_dim || codes[k] > sketch_dim) {
        fail(row, "a code outside [-sketch_dim, sketch_dim]");
      }
      in_sketch += codes[k] != 0;
    }
    if (starts[0] != 0 || starts[sketch_dim] != in_sketch) {
      fail(row, "offsets of the wrong extent");
    }
    for (int64_t j = 0; j < sketch_dim; ++j) {
      if (starts[j + 1] < starts[j]) fail(row, "decreasing offsets");
      for (int64_t e = starts[j]; e < starts[j + 1]; ++e) {
        const int64_t k = kp::code_index(entries[e]);
        if (k < 0 || k >= channels || entries[e] == 0 || listed[k] ||
            codes[k] != (entries[e] < 0 ? -(j + 1) : j + 1)) {
          fail(row, "an entry that is not a channel of its bin, or a channel listed twice");
        }
        listed[k] = true;
      }
    }
  }
}

KernelPoolingArgs check_inputs(const char* op, const at::Tensor& x, const at::Tensor& table,
                               const std::optional<at::Tensor>& alpha, int64_t sketch_dim,
                               bool normalize) {
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be (N, L, C), got shape ", x.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ",
                   x.scalar_type());
  TORCH_CHECK_VALUE(x.size(1) >= 1, op, ": x needs at least one location (L >= 1), got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(sketch_dim >= 2, op, ": sketch_dim must be >= 2, got ", sketch_dim);
  const int64_t channels = x.size(2), min_order = alpha ? 1 : 2;
  TORCH_CHECK_TYPE(table.scalar_type() == at::kLong, op, ": sketch_table must be int64, got ",
                   table.scalar_type());
  TORCH_CHECK_VALUE(table.dim() == 2 && table.size(0) >= min_order &&
                        table.size(1) == 2 * channels + sketch_dim + 1,
                    op, ": sketch_table must be (p, 2C + sketch_dim + 1) = (p, ",
                    2 * channels + sketch_dim + 1, ") with p >= ", min_order,
                    " (from sketch_table(hash_index, hash_sign, sketch_dim)),"
                    " got shape ", table.sizes());
  TORCH_CHECK_VALUE(table.device() == x.device(), op,
                    ": sketch_table must be on x's device ", x.device(), ", got ",
                    table.device());
  at::Tensor scale;
  if (alpha) {
    TORCH_CHECK_TYPE(at::isFloatingType(alpha->scalar_type()), op,
                     ": alpha must be floating point, got ", alpha->scalar_type());
    TORCH_CHECK_VALUE(alpha->dim() == 1 && alpha->size(0) == table.size(0) + 1, op,
                      ": alpha must be (p + 1,) = (", table.size(0) + 1, ",), got shape ",
                      alpha->sizes());
    TORCH_CHECK_VALUE(alpha->device() == x.device(), op, ": alpha must be on x's device ",
                      x.device(), ", got ", alpha->device());
    scale = alpha->to(at::toOpMathType(x.scalar_type())).contiguous();
  }
  const at::Tensor contiguous_table = table.contiguous();
  if (x.device().is_cpu()) check_table_values(op, contiguous_table, channels, sketch_dim);
  return {x, contiguous_table, scale, sketch_dim, normalize};
}

}  // namespace

at::Tensor sketch_table(const at::Tensor& hash_index, const at::Tensor& hash_sign,
                        int64_t sketch_dim) {
  constexpr const char* kOp = "sketch_table";
  TORCH_CHECK_VALUE(sketch_dim >= 2, kOp, ": sketch_dim must be >= 2, got ", sketch_dim);
  TORCH_CHECK_TYPE(hash_index.scalar_type() == at::kLong, kOp, ": hash_index must be int64, got ",
                   hash_index.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(hash_sign.scalar_type()), kOp,
                   ": hash_sign must be floating point, got ", hash_sign.scalar_type());
  TORCH_CHECK_VALUE(hash_index.dim() == 2 && hash_sign.sizes() == hash_index.sizes(), kOp,
                    ": hash_index and hash_sign must be (p, C) of one shape, got ",
                    hash_index.sizes(), " and ", hash_sign.sizes());
  TORCH_CHECK_VALUE(hash_sign.device() == hash_index.device(), kOp,
                    ": hash_index and hash_sign must be on one device, got ",
                    hash_index.device(), " and ", hash_sign.device());
  const at::Tensor index = hash_index.contiguous(), sign = hash_sign.contiguous();
  check_hash_values(index, sign, sketch_dim);
  const at::Tensor left_out = sign == 0, negative = sign < 0;
  const at::Tensor codes = at::where(left_out, 0, at::where(negative, -(index + 1), index + 1));
  // A channel left out of a sketch gets the key sketch_dim: it sorts past the last bin, in no bin.
  // Every argument named: at::sort(t, true, 1) would bind to sort(t, dim=1, descending=true).
  const auto [keys, channel] = at::sort(at::where(left_out, sketch_dim, index), /*stable=*/true,
                                        /*dim=*/1, /*descending=*/false);
  const at::Tensor edges =
      at::arange(sketch_dim + 1, index.options()).expand({index.size(0), -1}).contiguous();
  const at::Tensor starts = at::searchsorted(keys.contiguous(), edges);
  const at::Tensor entries = at::where(left_out.gather(1, channel), 0,
                                       at::where(negative.gather(1, channel), -(channel + 1),
                                                 channel + 1));
  return at::cat({codes, starts, entries}, 1);
}

std::tuple<at::Tensor, at::Tensor> kernel_pooling(const at::Tensor& x, const at::Tensor& table,
                                                  const std::optional<at::Tensor>& alpha,
                                                  int64_t sketch_dim, bool normalize) {
  const KernelPoolingArgs args =
      check_inputs("kernel_pooling", x, table, alpha, sketch_dim, normalize);
  if (x.size(0) == 0) {
    const int64_t width = args.layout().width();
    return {at::empty({0, width}, x.options()), at::empty({0, width}, args.compute_options())};
  }
  return on_device(x, [&](auto device) { return pool(device, args); });
}

std::tuple<at::Tensor, at::Tensor> kernel_pooling_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& table,
    const std::optional<at::Tensor>& alpha, const at::Tensor& blocks, const at::Tensor& out,
    int64_t sketch_dim, bool normalize) {
  constexpr const char* kOp = "kernel_pooling_backward";
  const KernelPoolingArgs args = check_inputs(kOp, x, table, alpha, sketch_dim, normalize);
  const std::array<int64_t, 2> shape{x.size(0), args.layout().width()};
  const at::IntArrayRef rows(shape);
  TORCH_CHECK_VALUE(grad.sizes() == rows && grad.scalar_type() == x.scalar_type() &&
                        grad.device() == x.device(),
                    kOp, ": grad must be ", rows, " in x's dtype ", x.scalar_type(), " on ",
                    x.device(), ", got ", grad.sizes(), " ", grad.scalar_type(), " on ",
                    grad.device());
  TORCH_CHECK_VALUE(blocks.sizes() == rows && blocks.scalar_type() == args.compute_type() &&
                        blocks.device() == x.device() && out.sizes() == rows &&
                        out.scalar_type() == x.scalar_type() && out.device() == x.device(),
                    kOp, ": out and blocks must be kernel_pooling's outputs ", rows, ", got ",
                    out.sizes(), " ", out.scalar_type(), " and ", blocks.sizes(), " ",
                    blocks.scalar_type());
  if (x.size(0) == 0) {
    return {at::zeros_like(x), alpha ? at::zeros_like(*alpha) : at::empty({0}, x.options())};
  }
  auto [grad_x, grad_alpha] = on_device(x, [&](auto device) {
    return backprop(device, args, grad, blocks.contiguous(), out.contiguous());
  });
  if (!alpha) return {grad_x, at::empty({0}, args.compute_options())};
  return {grad_x, grad_alpha.to(alpha->scalar_type())};
}

}  // namespace fgo
