// Kernels that check the emulator itself: barriers, warp collectives, dynamic shared memory,
// atomics, and the launches and divergence it must refuse. Written as ordinary CUDA.
#include "selftest_kernels.h"

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace fgo::emu::selftest {
namespace {

// out[b] = sum over block b's threads of in, by a shared-memory tree (blockDim.x a power of 2).
__global__ void block_sum(const float* in, float* out) {
  __shared__ float partial[1024];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// The same tree without barriers: a thread may read a partial sum before it is written.
__global__ void racy_block_sum(const float* in, float* out) {
  __shared__ float partial[1024];
  const unsigned t = threadIdx.x;
  partial[t] = in[blockIdx.x * blockDim.x + t];
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) partial[t] += partial[t + stride];
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

// Per thread i (a multiple of 32 threads): out[6i ..] = warp sum by xor shuffles, the
// next lane's value, the previous lane's value, lane 3's value, the ballot of lanes with
// in > 0 (its low 16 bits: a float holds them exactly), and whether all lanes have in > 0.
__global__ void warp_collectives(const float* in, float* out) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = in[i];
  float sum = v;
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  out[6 * i + 0] = sum;
  out[6 * i + 1] = __shfl_down_sync(0xffffffffu, v, 1);
  out[6 * i + 2] = __shfl_up_sync(0xffffffffu, v, 1);
  out[6 * i + 3] = __shfl_sync(0xffffffffu, v, 3);
  out[6 * i + 4] = static_cast<float>(__ballot_sync(0xffffffffu, v > 0) & 0xFFFFu);
  out[6 * i + 5] = static_cast<float>(__all_sync(0xffffffffu, v > 0));
}

// Odd threads exit before a barrier that the even ones wait at.
__global__ void divergent_barrier(const float* in, float* out) {
  if (threadIdx.x % 2) return;
  __syncthreads();
  out[threadIdx.x] = in[threadIdx.x];
}

// Lanes 16-31 exit; the others swap values with their neighbour over the full warp mask
// (legal: exited lanes of a mask count as arrived).
__global__ void shuffle_after_half_exit(const float* in, float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, in[threadIdx.x], 1);
}

// As above, but each lane reads lane + 16, which has exited.
__global__ void shuffle_from_exited_lane(const float* in, float* out) {
  if (threadIdx.x % 32 >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, in[threadIdx.x], 16);
}

// out = a __shared__ array read before anything was written to it.
__global__ void shared_read_before_write(const float* in, float* out) {
  __shared__ float never_written[32];
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  out[i] = never_written[threadIdx.x % 32] + in[i];
}

// out = in reversed within the block, through dynamic shared memory.
__global__ void reverse_in_shared(const float* in, float* out) {
  extern __shared__ float buffer[];
  buffer[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = buffer[blockDim.x - 1 - threadIdx.x];
}

// out[0] = number of threads with in > 0, counted with atomics.
__global__ void count_positive(const float* in, float* out) {
  if (in[blockIdx.x * blockDim.x + threadIdx.x] > 0) atomicAdd(out, 1.0f);
}

using Kernel = void (*)(const float*, float*);

Kernel find(const std::string& name) {
  if (name == "block_sum") return block_sum;
  if (name == "racy_block_sum") return racy_block_sum;
  if (name == "warp_collectives") return warp_collectives;
  if (name == "divergent_barrier") return divergent_barrier;
  if (name == "shuffle_after_half_exit") return shuffle_after_half_exit;
  if (name == "shuffle_from_exited_lane") return shuffle_from_exited_lane;
  if (name == "shared_read_before_write") return shared_read_before_write;
  if (name == "reverse_in_shared") return reverse_in_shared;
  if (name == "count_positive") return count_positive;
  TORCH_CHECK(false, "selftest: no kernel named ", name);
}

}  // namespace

void run(const std::string& kernel, const at::Tensor& input, const at::Tensor& output,
         int64_t grid, int64_t block, int64_t shared_bytes) {
  TORCH_CHECK(input.scalar_type() == at::kFloat && output.scalar_type() == at::kFloat &&
                  input.is_contiguous() && output.is_contiguous(),
              "selftest: input and output must be contiguous float32 tensors");
  const Kernel k = find(kernel);
  k<<<static_cast<unsigned>(grid), static_cast<unsigned>(block), shared_bytes>>>(
      input.data_ptr<float>(), output.data_ptr<float>());
  C10_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fgo::emu::selftest
