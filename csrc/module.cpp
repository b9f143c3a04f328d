// The extension module finegrained_ops._C.
#include <pybind11/pybind11.h>

#include "bindings.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "finegrained_ops native kernels (CPU, and CUDA when built with it)";
  fgo::bind_ops(m);
}
