// The torch.library op finegrained_ops::scale_gradient (precomputed_gradient.h's backward
// pass): schema and device kernels. Its fake kernel is registered from Python
// (finegrained_ops/ops/class_loss.py). Compiled into the extension module only.
#include <torch/library.h>

#include "precomputed_gradient/scale_gradient.h"

namespace fgo {
namespace {

void register_device_kernels(torch::Library& m) {
  m.impl("scale_gradient", TORCH_FN(scale_gradient));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(finegrained_ops, m) {
  m.def("scale_gradient(Tensor grad, Tensor grad_loss, Tensor norm) -> Tensor");
}

TORCH_LIBRARY_IMPL(finegrained_ops, CPU, m) { register_device_kernels(m); }

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(finegrained_ops, CUDA, m) { register_device_kernels(m); }
#endif

}  // namespace fgo
