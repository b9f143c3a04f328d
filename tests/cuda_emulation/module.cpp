// The CUDA emulation's extension module: finegrained_ops' entry points (running the CUDA
// path on CPU tensors), the emulator's controls, and its self-test kernels.
#include <cuda_runtime.h>
#include <torch/extension.h>

#include "bindings.h"
#include "selftest_kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "finegrained_ops CUDA launchers and kernels, emulated on the host";
  fgo::bind_ops(m);
  m.def("set_reverse_order", &fgo::emu::set_reverse_order,
        "Run the threads of each block, and the blocks, in reverse order.", py::arg("reverse"));
  m.def("take_launches", [] {
    py::list out;
    for (const auto& r : fgo::emu::take_launches()) {
      out.append(py::make_tuple(r.kernel, py::make_tuple(r.grid.x, r.grid.y, r.grid.z),
                                py::make_tuple(r.block.x, r.block.y, r.block.z), r.shared_bytes));
    }
    return out;
  }, "The launches since the last call: (kernel, grid, block, dynamic shared bytes).");
  m.def("selftest", &fgo::emu::selftest::run,
        "Launch a self-test kernel of the emulator on float32 CPU tensors.", py::arg("kernel"),
        py::arg("input"), py::arg("output"), py::arg("grid"), py::arg("block"),
        py::arg("shared_bytes") = 0);
}
