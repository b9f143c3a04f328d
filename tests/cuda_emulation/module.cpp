// The CUDA emulation's extension module: the switch that puts finegrained_ops' device kernels,
// compiled for the CUDA path, in place of its CPU kernels (on CPU tensors), the emulator's
// controls, and its self-test kernels.
#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <memory>

#include "common/device_kernels.h"
#include "selftest_kernels.h"

namespace {

// While set, every op's emulated device kernels (each <op>_op.cpp's, collected by
// FGO_DEVICE_KERNELS) are the op's CPU kernels; resetting it brings the real ones back.
std::unique_ptr<torch::Library> emulated_kernels;

// The dispatcher warns that a kernel is being overridden: that is the point here.
struct QuietOverride : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

void emulate(bool on) {
  emulated_kernels.reset();
  if (!on) return;
  QuietOverride quiet;
  const c10::WarningUtils::WarningHandlerGuard guard(&quiet);
  emulated_kernels = std::make_unique<torch::Library>(
      torch::Library::IMPL, "finegrained_ops", c10::DispatchKey::CPU, __FILE__, __LINE__);
  for (const fgo::DeviceKernels kernels : fgo::emulated_device_kernels()) {
    kernels(*emulated_kernels);
  }
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "finegrained_ops CUDA launchers and kernels, emulated on the host";
  m.def("emulate", &emulate,
        "Run every finegrained_ops op's CUDA path, emulated, for CPU tensors (True), or its CPU "
        "kernels again (False).", py::arg("on"));
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
