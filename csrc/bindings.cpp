// The one pybind11 module: every native entry point of finegrained_ops is bound here.
// Python wraps each in a torch.library custom op (finegrained_ops/ops/), so validation,
// fake tensors and autograd live there and torch.compile can trace through them.
#include <torch/extension.h>

#include "build_info/build_info.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "finegrained_ops native kernels (CPU, and CUDA when built with it)";

  m.def("build_info", [] {
    const fgo::BuildInfo info = fgo::build_info();
    py::dict d;
    d["version"] = info.version;
    d["torch_version"] = info.torch_version;
    d["with_cuda"] = info.with_cuda;
    d["cuda_version"] = info.cuda_version;
    d["cuda_arch_list"] = info.cuda_arch_list;
    d["with_openmp"] = info.with_openmp;
    d["num_threads"] = info.num_threads;
    return d;
  }, "Facts fixed when the extension was compiled (versions, CUDA, OpenMP) as a dict.");
}
