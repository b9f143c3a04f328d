// CUDA emulation runtime: launches, fibers for the CUDA threads of a block, barriers and warp
// collectives that either complete or fail the launch (see emulator.h).
#include <cuda_runtime.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>

namespace fgo::emu {
namespace {

constexpr size_t kStackBytes = size_t(256) << 10;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = size_t(48) << 10;  // without a cudaFuncSetAttribute opt-in
constexpr uint64_t kMaxThreadsPerLaunch = uint64_t(1) << 26;  // a runaway grid fails, not hangs

enum class Wait { kRunnable, kBlockBarrier, kWarpCollective, kDone };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  uint3 index{};
  Wait wait = Wait::kRunnable;
  bool started = false;
  unsigned mask = 0;   // kWarpCollective: the lanes it waits for
  uint64_t value = 0;  // kWarpCollective: what it publishes
};

struct Abort {};  // unwinds a CUDA thread of a failed block

// The block being run. Launches hold the mutex, so there is one at a time.
struct Block {
  std::vector<Fiber> fibers;
  unsigned threads = 0;
  ucontext_t scheduler;
  unsigned current = 0;
  const std::function<void()>* body = nullptr;
  std::vector<std::array<uint64_t, 32>> warp_values;
  std::vector<unsigned> warp_arrived;              // lanes that took part in the last collective
  std::vector<unsigned char> shared;               // dynamic shared memory
  std::vector<const void*> static_shared;          // __shared__ variables poisoned in this block
  size_t static_shared_bytes = 0;
  std::string error;  // the first failure of the block
  bool assertion = false;  // it was a device-side assertion (device_assert)
};

Block block;
std::mutex launch_mutex;
cudaError_t last_error = cudaSuccess;
std::string last_detail;
bool reverse_order = false;
std::vector<LaunchRecord> launches;

std::string str(dim3 d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}
std::string str(uint3 d) { return str(dim3(d.x, d.y, d.z)); }

char* new_stack() {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  mprotect(base, page, PROT_NONE);  // a stack overflow faults instead of corrupting memory
  return static_cast<char*>(base) + page;
}

// AddressSanitizer must be told of every switch between the scheduler's stack and a fiber's
// (make sanitize builds the emulation with it), or it takes the fiber stacks for corruption.
#if defined(__SANITIZE_ADDRESS__)
const void* scheduler_stack = nullptr;
size_t scheduler_stack_bytes = 0;
void* fiber_fake_stack = nullptr;

void entered_fiber() {
  __sanitizer_finish_switch_fiber(fiber_fake_stack, &scheduler_stack, &scheduler_stack_bytes);
}
void leave_fiber(bool exiting) {
  __sanitizer_start_switch_fiber(exiting ? nullptr : &fiber_fake_stack, scheduler_stack,
                                 scheduler_stack_bytes);
}
void switch_into(ucontext_t* from, ucontext_t* to, const char* stack) {
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, stack, kStackBytes);
  swapcontext(from, to);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
}
#else
void entered_fiber() {}
void leave_fiber(bool) {}
void switch_into(ucontext_t* from, ucontext_t* to, const char*) { swapcontext(from, to); }
#endif

void record_failure(const std::string& message) {
  if (block.error.empty()) block.error = message;
}

void fiber_main() {
  entered_fiber();
  Fiber& self = block.fibers[block.current];
  try {
    (*block.body)();
  } catch (const Abort&) {
  } catch (const std::exception& e) {
    record_failure(std::string("thread ") + str(self.index) + " threw: " + e.what());
  }
  self.wait = Wait::kDone;
  leave_fiber(/*exiting=*/true);
}  // returns to uc_link, the scheduler

void resume(unsigned i) {
  Fiber& f = block.fibers[i];
  block.current = i;
  threadIdx = f.index;
  f.wait = Wait::kRunnable;
  f.started = true;
  switch_into(&block.scheduler, &f.context, f.stack);
}

// Called in a CUDA thread: wait until the scheduler releases it.
void wait_for(Wait wait) {
  Fiber& self = block.fibers[block.current];
  self.wait = wait;
  leave_fiber(/*exiting=*/false);
  swapcontext(&self.context, &block.scheduler);
  entered_fiber();
  if (!block.error.empty()) throw Abort{};
}

std::string describe(const Fiber& f) {
  switch (f.wait) {
    case Wait::kDone: return "has exited";
    case Wait::kBlockBarrier: return "waits at __syncthreads";
    case Wait::kWarpCollective: {
      std::ostringstream s;
      s << "waits in a warp collective over mask 0x" << std::hex << f.mask;
      return s.str();
    }
    default: return "is runnable";
  }
}

// Every thread now waits or has exited. Releases every complete warp collective (exited
// lanes of its mask count as arrived, as in PTX), else a complete barrier; records a failure
// when nothing can progress.
void release_waiting() {
  bool released = false;
  std::string stuck;  // why the first incomplete collective cannot complete
  for (unsigned i = 0; i < block.threads; ++i) {
    const Fiber& f = block.fibers[i];
    if (f.wait != Wait::kWarpCollective) continue;
    const unsigned warp = i / 32, lane = i % 32;
    const std::string where = "warp " + std::to_string(warp) + " of block " + str(blockIdx);
    if (!(f.mask >> lane & 1u)) {
      return record_failure(where + ": lane " + std::to_string(lane) +
                            " calls a warp collective whose mask leaves it out");
    }
    bool complete = true;
    for (unsigned other = 0; other < 32 && complete; ++other) {
      if (!(f.mask >> other & 1u)) continue;
      const unsigned j = warp * 32 + other;
      if (j >= block.threads) {
        return record_failure(where + ": the mask names lane " + std::to_string(other) +
                              ", which a block of " + std::to_string(block.threads) +
                              " threads does not have");
      }
      const Fiber& g = block.fibers[j];
      if (g.wait == Wait::kDone || (g.wait == Wait::kWarpCollective && g.mask == f.mask)) continue;
      complete = false;
      if (stuck.empty()) {
        stuck = where + ": lane " + std::to_string(lane) + " " + describe(f) + " but lane " +
                std::to_string(other) + " " + describe(g);
      }
    }
    if (!complete) continue;
    unsigned arrived = 0;
    for (unsigned other = 0; other < 32; ++other) {
      Fiber& g = block.fibers[warp * 32 + other];
      if (!(f.mask >> other & 1u) || g.wait == Wait::kDone) continue;
      block.warp_values[warp][other] = g.value;
      arrived |= 1u << other;
      g.wait = Wait::kRunnable;
    }
    block.warp_arrived[warp] = arrived;
    released = true;
  }
  if (released) return;
  unsigned at_barrier = 0, exited = 0;
  for (unsigned i = 0; i < block.threads; ++i) {
    at_barrier += block.fibers[i].wait == Wait::kBlockBarrier;
    exited += block.fibers[i].wait == Wait::kDone;
  }
  if (at_barrier == block.threads) {
    for (unsigned i = 0; i < block.threads; ++i) block.fibers[i].wait = Wait::kRunnable;
    return;
  }
  if (!stuck.empty()) return record_failure(stuck);
  // Stricter than some hardware, which counts exited threads as arrived: the CUDA programming
  // guide leaves a __syncthreads() that not every thread of the block reaches undefined.
  record_failure("block " + str(blockIdx) + ": " + std::to_string(at_barrier) + " of " +
                 std::to_string(block.threads) + " threads wait at __syncthreads and " +
                 std::to_string(exited) + " have exited: the barrier can never complete");
}

void run_block(uint3 index, dim3 shape) {
  blockIdx = index;
  block.static_shared.clear();
  block.static_shared_bytes = 0;
  for (unsigned i = 0; i < block.threads; ++i) {
    Fiber& f = block.fibers[i];
    f.index = {i % shape.x, i / shape.x % shape.y, i / (shape.x * shape.y)};
    f.wait = Wait::kRunnable;
    f.started = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &block.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  for (;;) {
    for (unsigned k = 0; k < block.threads && block.error.empty(); ++k) {
      const unsigned i = reverse_order ? block.threads - 1 - k : k;
      if (block.fibers[i].wait == Wait::kRunnable) resume(i);
    }
    bool all_done = true;
    for (unsigned i = 0; i < block.threads; ++i) all_done &= block.fibers[i].wait == Wait::kDone;
    if (all_done) return;
    if (block.error.empty()) release_waiting();
    if (!block.error.empty()) {  // unwind the threads that started; drop the others
      for (unsigned i = 0; i < block.threads; ++i) {
        if (block.fibers[i].started && block.fibers[i].wait != Wait::kDone) resume(i);
      }
      return;
    }
  }
}

// Why CUDA would refuse this configuration, or "".
std::string invalid_configuration(const LaunchConfig& c) {
  const dim3 g = c.grid, b = c.block;
  if (g.x == 0 || g.y == 0 || g.z == 0) return "grid " + str(g) + " has no blocks";
  if (g.y > 65535 || g.z > 65535) return "grid " + str(g) + " exceeds 65535 in y or z";
  if (b.x == 0 || b.y == 0 || b.z == 0) return "block " + str(b) + " has no threads";
  if (b.x > 1024 || b.y > 1024 || b.z > 64 ||
      uint64_t(b.x) * b.y * b.z > kMaxThreadsPerBlock) {
    return "block " + str(b) + " has more than 1024 threads (or exceeds 1024, 1024, 64)";
  }
  return "";
}

void set_error(cudaError_t error, const char* kernel, const std::string& detail) {
  last_error = error;
  last_detail = std::string(kernel) + ": " + detail;
}

}  // namespace

void run_launch(const char* kernel, const LaunchConfig& config,
                const std::function<void()>& body) {
  const std::lock_guard<std::mutex> lock(launch_mutex);
  launches.push_back({kernel, config.grid, config.block, config.shared_bytes});
  if (const std::string invalid = invalid_configuration(config); !invalid.empty()) {
    return set_error(cudaErrorInvalidConfiguration, kernel, invalid);
  }
  if (config.shared_bytes > kMaxSharedBytes) {
    return set_error(cudaErrorInvalidValue, kernel,
                     std::to_string(config.shared_bytes) + " bytes of dynamic shared memory; "
                     "above 48 KiB a kernel must opt in with cudaFuncSetAttribute");
  }
  const dim3 g = config.grid, b = config.block;
  const uint64_t blocks = uint64_t(g.x) * g.y * g.z;
  block.threads = b.x * b.y * b.z;
  if (blocks * block.threads > kMaxThreadsPerLaunch) {
    return set_error(cudaErrorLaunchOutOfResources, kernel,
                     "grid " + str(g) + " x block " + str(b) + " is too large to emulate");
  }
  while (block.fibers.size() < block.threads) {
    block.fibers.emplace_back();
    block.fibers.back().stack = new_stack();
  }
  block.warp_values.assign((block.threads + 31) / 32, {});
  block.warp_arrived.assign((block.threads + 31) / 32, 0);
  block.body = &body;
  block.error.clear();
  block.assertion = false;
  gridDim = g;
  blockDim = b;
  for (uint64_t k = 0; k < blocks; ++k) {
    const uint64_t i = reverse_order ? blocks - 1 - k : k;
    block.shared.assign(config.shared_bytes, 0xFF);
    run_block({unsigned(i % g.x), unsigned(i / g.x % g.y), unsigned(i / (uint64_t(g.x) * g.y))},
              b);
    if (!block.error.empty()) {
      return set_error(block.assertion ? cudaErrorAssert : cudaErrorLaunchFailure, kernel,
                       block.error);
    }
  }
}

const std::string& last_error_detail() { return last_detail; }

void set_reverse_order(bool reverse) { reverse_order = reverse; }

std::vector<LaunchRecord> take_launches() {
  const std::lock_guard<std::mutex> lock(launch_mutex);
  return std::move(launches);
}

void block_barrier() { wait_for(Wait::kBlockBarrier); }

unsigned warp_exchange(unsigned mask, uint64_t value, uint64_t (&lanes)[32]) {
  Fiber& self = block.fibers[block.current];
  self.mask = mask;
  self.value = value;
  wait_for(Wait::kWarpCollective);
  const auto& published = block.warp_values[block.current / 32];
  std::copy(published.begin(), published.end(), lanes);
  return block.warp_arrived[block.current / 32];
}

void shared_variable(const void* address, size_t bytes) {
  for (const void* seen : block.static_shared) {
    if (seen == address) return;
  }
  block.static_shared.push_back(address);
  block.static_shared_bytes += bytes;
  if (block.static_shared_bytes + block.shared.size() > kMaxSharedBytes) {
    fail(std::to_string(block.static_shared_bytes) + " bytes of __shared__ variables and " +
         std::to_string(block.shared.size()) + " of dynamic shared memory exceed 48 KiB");
  }
  std::memset(const_cast<void*>(address), 0xFF, bytes);
}

unsigned lane_id() { return block.current % 32; }

void* dynamic_shared() { return block.shared.data(); }

void fail(const std::string& message) {
  record_failure("thread " + str(threadIdx) + " of block " + str(blockIdx) + ": " + message);
  throw Abort{};
}

void device_assert(const char* message) {
  if (block.error.empty()) block.assertion = true;
  fail(std::string("device-side assertion failed: ") + message);
}

}  // namespace fgo::emu

cudaError_t cudaGetLastError() {
  const cudaError_t error = fgo::emu::last_error;
  fgo::emu::last_error = cudaSuccess;
  return error;
}

cudaError_t cudaPeekAtLastError() { return fgo::emu::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorAssert: return "device-side assert triggered";
  }
  return "unknown error";
}
