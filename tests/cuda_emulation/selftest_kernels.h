#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace fgo::emu::selftest {

// Launches the self-test kernel `kernel` (see selftest_kernels.cu) with grid x block threads
// on float32 CPU tensors; a failed launch raises with the emulator's message.
void run(const std::string& kernel, const at::Tensor& input, const at::Tensor& output,
         int64_t grid, int64_t block, int64_t shared_bytes);

}  // namespace fgo::emu::selftest
