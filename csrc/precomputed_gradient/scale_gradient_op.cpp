// The torch.library op finegrained_ops::scale_gradient (precomputed_gradient.h's backward
// pass): schema and device kernels. Its fake kernel is registered from Python
// (finegrained_ops/ops/class_loss.py). The CUDA emulation compiles this file
// too, for its device kernels only (common/device_kernels.h).
#include <torch/library.h>

#include "common/device_kernels.h"
#include "precomputed_gradient/scale_gradient.h"

namespace fgo {
namespace {

void register_device_kernels(torch::Library& m) {
  m.impl("scale_gradient", TORCH_FN(scale_gradient));
}

}  // namespace

#if FGO_OP_REGISTRATION
TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("scale_gradient(Tensor grad, Tensor grad_loss, Tensor norm) -> Tensor");
}
#endif  // FGO_OP_REGISTRATION

FGO_DEVICE_KERNELS(register_device_kernels);

}  // namespace fgo
