#pragma once
// CUDA emulation: kernel launches and the device built-ins (thread indices, barriers, warp
// collectives, atomics) on the host. Included through the shim's cuda_runtime.h.
//
// A launch runs its blocks one after another; the CUDA threads of a block run as fibers on the
// calling OS thread, each until it exits or waits at a barrier or a warp collective, which
// completes once every thread it waits for has arrived. A barrier that some thread of the
// block can never reach (it exited, or waits elsewhere) fails the launch instead of hanging.
// Thread and block order can be reversed (set_reverse_order): a kernel that reads another
// thread's write without a barrier in between then gives different results.
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

// Built-in variables; the emulator sets them before it resumes a CUDA thread.
inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace fgo::emu {

struct LaunchConfig {
  LaunchConfig(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t = nullptr)
      : grid(grid), block(block), shared_bytes(shared_bytes) {}
  dim3 grid, block;
  size_t shared_bytes;
};

// Runs body once per CUDA thread of config's grid. An invalid configuration, a barrier or
// collective that cannot complete, or a launch too large to emulate sets the error that
// cudaGetLastError returns.
void run_launch(const char* kernel, const LaunchConfig& config, const std::function<void()>& body);

// kernel<<<config>>>(args) becomes launch("kernel", config, [&](auto... a) { kernel(a...); },
// args) (build.py): the arguments are evaluated once, on the host, and every CUDA thread
// gets its own copies, as kernel parameters are.
template <typename Body, typename... Args>
void launch(const char* kernel, const LaunchConfig& config, Body body, Args... args) {
  const std::tuple<Args...> packed(args...);
  run_launch(kernel, config, [&] { std::apply(body, packed); });
}

// What the last failed launch did wrong, for C10_CUDA_CHECK's message.
const std::string& last_error_detail();

// Test controls: the order of threads and blocks, and the launches made since the last take.
struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  size_t shared_bytes;
};
void set_reverse_order(bool reverse);
std::vector<LaunchRecord> take_launches();

// Device side.
void block_barrier();
// Waits for the lanes of `mask` (which must include this lane) to reach a warp collective with
// the same mask, or exit; fills each arrived lane's published value and returns the arrived
// lanes (the mask less the exited ones).
unsigned warp_exchange(unsigned mask, uint64_t value, uint64_t (&lanes)[32]);
// Called where a __shared__ variable is declared (build.py): the first thread of a block to
// get there fills it with 0xFF bytes (a read before any write shows), and the block's
// __shared__ bytes plus its dynamic shared memory must stay within 48 KiB.
void shared_variable(const void* address, size_t bytes);
unsigned lane_id();
void* dynamic_shared();  // the launch's dynamic shared memory, filled with 0xFF bytes
[[noreturn]] void fail(const std::string& message);
// A failed FGO_KERNEL_CHECK (common/host_device.h): this thread stops, and the launch fails
// with cudaErrorAssert and the check's message, as a device-side assertion does on a GPU
// (where the error surfaces at the next synchronisation).
[[noreturn]] void device_assert(const char* message);

template <typename T>
uint64_t to_bits(T value) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move <= 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// The value of lane `source` (the calling lane's own where `source` is outside its segment of
// `width` lanes, as for __shfl_up/down at the ends).
template <typename T>
T shuffle(unsigned mask, T value, int source, bool own_if_outside, int width) {
  if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
    fail("shuffle width must be a power of 2 in [1, 32], got " + std::to_string(width));
  }
  uint64_t lanes[32];
  const unsigned arrived = warp_exchange(mask, to_bits(value), lanes);
  const int lane = static_cast<int>(lane_id()), segment = lane & ~(width - 1);
  if (own_if_outside && (source < segment || source >= segment + width)) return value;
  source = segment + (source & (width - 1));
  if (!(arrived >> source & 1u)) {
    fail("lane " + std::to_string(lane) + " reads lane " + std::to_string(source) + ", which " +
         ((mask >> source & 1u) ? "has exited" : "is not in the shuffle's mask"));
  }
  return from_bits<T>(lanes[source]);
}

}  // namespace fgo::emu

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

inline void __syncthreads() { fgo::emu::block_barrier(); }

template <typename T>
T __shfl_sync(unsigned mask, T value, int source_lane, int width = 32) {
  return fgo::emu::shuffle(mask, value, source_lane, false, width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  return fgo::emu::shuffle(mask, value, static_cast<int>(fgo::emu::lane_id()) ^ lane_mask, true,
                           width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  return fgo::emu::shuffle(mask, value, static_cast<int>(fgo::emu::lane_id() + delta), true,
                           width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  return fgo::emu::shuffle(mask, value, static_cast<int>(fgo::emu::lane_id()) - int(delta), true,
                           width);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  uint64_t lanes[32];
  const unsigned arrived = fgo::emu::warp_exchange(mask, predicate != 0, lanes);
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane) {
    if ((arrived >> lane & 1u) && lanes[lane]) ballot |= 1u << lane;
  }
  return ballot;
}
inline int __all_sync(unsigned mask, int predicate) {
  uint64_t lanes[32];
  const unsigned arrived = fgo::emu::warp_exchange(mask, predicate != 0, lanes);
  for (int lane = 0; lane < 32; ++lane) {
    if ((arrived >> lane & 1u) && !lanes[lane]) return 0;
  }
  return 1;
}

// A warp barrier: the lanes of `mask` wait for each other (their earlier writes are then
// visible to one another, as __syncwarp orders memory on the device).
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  uint64_t lanes[32];
  fgo::emu::warp_exchange(mask, 0, lanes);
}

inline int __popc(unsigned bits) { return __builtin_popcount(bits); }

// Only one CUDA thread runs at a time and none is switched out inside it, so this is atomic.
// (Which types it accepts is nvcc's to check: `make cuda-check` compiles every kernel.)
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
