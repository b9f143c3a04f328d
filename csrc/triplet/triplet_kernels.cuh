#pragma once
// CUDA kernels of triplet mining / loss. Raw pointers, sizes and a stream only: this file
// needs no torch header, so `make cuda-check` compiles it on machines without a CUDA torch.
//
// One warp per anchor, kWarps anchors per block. The warp
//  0. (optionally) turns its row of inner products into distances in place, checking them,
//     and zeroes its rows of the pass's accumulators: no launch of their own;
//  1. gathers the anchor's positives (the bank rows of its label) in index order by ballots
//     over the labels, then ranks them by (distance, index): each lane counts, for its
//     positives, how many come before them, and writes the kept ones (bank index, distance)
//     to the anchor's scratch row at their rank. O(N / 32 + P^2 / 32) per lane; nothing is
//     sorted;
//  2. strides the candidates with its lanes (coalesced reads of the distance row) through the
//     per-negative math of triplet_math.h: binary searches in the sorted positives and
//     difference-array updates by atomics (int64 counts; float weights of integer values
//     below 2^24, exact and so independent of the order the atomics land in);
//  3. scans the difference array and reduces the loss by fixed shuffle trees.
// Nothing depends on the schedule: results are bitwise reproducible.

#include <cuda_runtime.h>

#include <cstdint>

#include "common/reduce.cuh"
#include "triplet/triplet_math.h"

namespace fgo {
namespace triplet {
namespace cuda {

constexpr int kWarps = 4;  // anchors per block

// The rows of a pass.
template <typename T>
struct AnchorRows {
  // (rows, stride) distances to the bank, then the extras; or, when query_sq_norms is set,
  // the inner products <q, c>, which step 0 turns into distances |q|^2 + |c|^2 - 2 <q, c>
  // (clamped at 0; their square roots unless `squared`), checked finite.
  T* dist;
  const T* query_sq_norms;       // (rows,) or nullptr
  const T* candidate_sq_norms;   // (stride,)
  bool squared;
  const int64_t* labels;         // (num_labelled,) the bank's labels
  const int64_t* extra_labels;   // (stride - num_labelled,) the extras'
  const int64_t* query_labels;   // (rows,)
  const int64_t* query_indices;  // (rows,) each anchor's own bank index, or -1; nullptr: a
                                 // (in-batch, the anchors are the bank's first rows)
  // Scratch, (rows, capacity) with capacity >= any anchor's positives: its positives in index
  // order, then the kept ones' bank indices and distances, nearest first.
  int32_t* positive_list;
  int32_t* sorted_index;
  T* sorted_dist;
  int64_t capacity;
  int64_t rows, stride, num_labelled;
  double positive_fraction;
};

// An anchor's kept positives, nearest first: d_ap[j] is the distance to the j-th.
template <typename T>
struct SortedPositives {
  T* dist;
  int32_t* index;
  __device__ __forceinline__ T operator[](int64_t j) const { return dist[j]; }
};

__device__ __forceinline__ int lane_id() { return static_cast<int>(threadIdx.x % 32); }

// Inclusive prefix sum over the lanes.
template <typename V>
__device__ __forceinline__ V warp_inclusive_scan(V v) {
  for (int offset = 1; offset < 32; offset <<= 1) {
    const V below = __shfl_up_sync(kFullMask, v, offset);
    if (lane_id() >= offset) v += below;
  }
  return v;
}

__device__ __forceinline__ void add_count(int64_t* address, int64_t value) {
  atomicAdd(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(value));
}

// The anchor's own index in the bank, excluded from its positives (-1: none).
template <typename T>
__device__ __forceinline__ int64_t self_index(const AnchorRows<T>& s, int64_t a) {
  return s.query_indices != nullptr ? s.query_indices[a] : a;
}

// Step 0: the anchor's distances from its inner products, and its accumulator rows zeroed.
template <typename T>
__device__ void prepare_row(const AnchorRows<T>& s, const RowsParams<T>& p, int64_t a, T* dist) {
  FGO_KERNEL_CHECK(self_index(s, a) >= -1 && self_index(s, a) < s.num_labelled,
                   "triplet: query_indices must be -1 or an index into bank_embeddings' rows");
  if (s.query_sq_norms != nullptr) {
    const T own = s.query_sq_norms[a];
    for (int64_t n = lane_id(); n < s.stride; n += 32) {
      const T squared = own + s.candidate_sq_norms[n] - T(2) * dist[n];
      const T d = squared < T(0) ? T(0) : squared;  // NaN stays NaN, for the check
      FGO_KERNEL_CHECK(::isfinite(d),
                       "triplet: the embeddings must be finite and their squared distances "
                       "must fit in their dtype (found NaN or Inf; normalise the embeddings or "
                       "use float64)");
      dist[n] = s.squared ? d : sqrt(d);
    }
  }
  if (p.pass == kLoss) {
    for (int64_t n = lane_id(); n < p.weight_stride; n += 32) {
      p.weights[a * p.weight_stride + n] = T(0);
    }
  } else if (p.pass == kCount) {
    for (int64_t j = lane_id(); j < p.positive_stride; j += 32) {
      p.positive_counts[a * p.positive_stride + j] = 0;
    }
  }
  __syncwarp();
}

// The anchor's positives (same label, labelled, not itself) in index order into `list`, by a
// ballot per 32 candidates; returns how many.
template <typename T>
__device__ int64_t gather_positives(const AnchorRows<T>& s, int64_t a, int32_t* list) {
  const int64_t self = self_index(s, a), label = s.query_labels[a];
  int64_t count = 0;
  for (int64_t base = 0; base < s.num_labelled; base += 32) {
    const int64_t n = base + lane_id();
    const bool positive = n < s.num_labelled && s.labels[n] == label && n != self;
    const unsigned ballot = __ballot_sync(kFullMask, positive);
    const int64_t slot = count + __popc(ballot & ((1u << lane_id()) - 1u));
    if (positive && slot < s.capacity) list[slot] = static_cast<int32_t>(n);
    count += __popc(ballot);
  }
  __syncwarp();
  FGO_KERNEL_CHECK(count <= s.capacity,
                   "triplet_mine: max_positives is below an anchor's number of positives");
  return count < s.capacity ? count : s.capacity;
}

// Writes the anchor's kept positives, nearest first, to `out`; returns how many. A lane ranks
// its positives by (distance, index) against tiles of 32, each loaded coalesced by the warp
// and broadcast lane by lane: O(P^2 / 32) shuffles per lane, no sort.
template <typename T>
__device__ int64_t sort_positives(const AnchorRows<T>& s, int64_t a, const T* dist,
                                  const SortedPositives<T>& out) {
  int32_t* list = s.positive_list + a * s.capacity;
  const int64_t count = gather_positives(s, a, list);
  const int64_t kept = kept_positives(count, s.positive_fraction);
  // Position e of the list as (bank index, distance); past its end, unused placeholders.
  const auto load = [&](int64_t e, int64_t* n, T* d) {
    *n = e < count ? list[e] : 0;
    *d = e < count ? dist[*n] : T(0);
  };
  for (int64_t own = 0; own < count; own += 32) {
    int64_t n;
    T d;
    load(own + lane_id(), &n, &d);
    int64_t rank = 0;
    for (int64_t tile = 0; tile < count; tile += 32) {
      int64_t m;
      T dm;
      load(tile + lane_id(), &m, &dm);
      const int64_t width = count - tile < 32 ? count - tile : 32;
      for (int i = 0; i < width; ++i) {
        const int64_t mi = __shfl_sync(kFullMask, m, i);
        const T di = __shfl_sync(kFullMask, dm, i);
        rank += nearer(di, mi, d, n);
      }
    }
    if (own + lane_id() < count && rank < kept) {
      out.index[rank] = static_cast<int32_t>(n);
      out.dist[rank] = d;
    }
  }
  __syncwarp();
  return kept;
}

// The nearest negative, first index among equal distances (as the CPU); -1 when none.
template <typename T>
__device__ int64_t nearest_negative_of_warp(const AnchorCandidates<T>& c) {
  int64_t best = -1;
  T best_d = T(0);
  for (int64_t n = lane_id(); n < c.num_candidates; n += 32) {
    if (c.negative(n) && (best < 0 || nearer(c.dist[n], n, best_d, best))) {
      best = n;
      best_d = c.dist[n];
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const int64_t other = __shfl_xor_sync(kFullMask, best, offset);
    const T other_d = __shfl_xor_sync(kFullMask, best_d, offset);
    if (other >= 0 && (best < 0 || nearer(other_d, other, best_d, best))) {
      best = other;
      best_d = other_d;
    }
  }
  return best;
}

// kHardest's one triplet of the anchor: the farthest kept positive (its slot j in d_ap) and
// the nearest negative n, both -1 when either is absent.
struct HardestTriplet {
  int64_t j = -1, n = -1;
  __device__ bool found() const { return j >= 0; }
};

template <typename T>
__device__ HardestTriplet hardest_triplet_of_warp(const AnchorCandidates<T>& c,
                                                  const SortedPositives<T>& d_ap, int64_t kept) {
  const int64_t n = nearest_negative_of_warp(c), j = farthest_positive(d_ap, kept);
  return n >= 0 && j >= 0 ? HardestTriplet{j, n} : HardestTriplet{};
}

// kHardest's kCount and kLoss passes (count_anchor and loss_anchor below for the other
// rules), by lane 0: the anchor's triplet t or none.
template <typename T>
__device__ void hardest_anchor(const RowsParams<T>& p, int64_t a, const AnchorCandidates<T>& c,
                               const SortedPositives<T>& d_ap, HardestTriplet t) {
  if (lane_id() != 0) return;
  if (p.pass == kCount) {
    if (t.found()) p.positive_counts[a * p.positive_stride + t.j] = 1;
    p.counts[a] = selected_count(p, t.found() ? 1 : 0);
    return;
  }
  const bool nonzero = t.found() && violates(d_ap[t.j], c.dist[t.n], p.margin);
  p.row_loss[a] = nonzero ? static_cast<double>(d_ap[t.j]) - static_cast<double>(c.dist[t.n]) +
                                static_cast<double>(p.margin)
                          : 0.0;
  p.row_nonzero[a] = nonzero ? 1 : 0;
  p.row_mined[a] = t.found() ? 1 : 0;
  if (nonzero) {
    T* w = p.weights + a * p.weight_stride;
    w[d_ap.index[t.j]] = T(1);
    w[t.n] = T(-1);
  }
}

// kCount: cnt[j] = triplets of the j-th kept positive (cnt zeroed by step 0).
template <typename T>
__device__ void count_anchor(const RowsParams<T>& p, int64_t a, const AnchorCandidates<T>& c,
                             const SortedPositives<T>& d_ap, int64_t kept) {
  int64_t* cnt = p.positive_counts + a * p.positive_stride;
  int64_t negatives = 0;
  for (int64_t n = lane_id(); n < c.num_candidates; n += 32) {
    if (!c.negative(n)) continue;
    ++negatives;
    if (p.rule == kAll) continue;
    const PositiveRange r = loss_range(d_ap, kept, c.dist[n], p.rule, p.margin);
    if (r.size() == 0) continue;
    add_count(cnt + r.begin, 1);
    if (r.end < kept) add_count(cnt + r.end, -1);
  }
  negatives = warp_sum(negatives);
  __syncwarp();
  int64_t carry = 0, total = 0;
  for (int64_t base = 0; base < kept; base += 32) {
    const int64_t j = base + lane_id();
    int64_t running = negatives;
    if (p.rule != kAll) running = carry + warp_inclusive_scan(j < kept ? cnt[j] : int64_t(0));
    if (j < kept) {
      cnt[j] = running;
      total += running;
    }
    carry = __shfl_sync(kFullMask, running, 31);
  }
  total = warp_sum(total);
  if (lane_id() == 0) p.counts[a] = selected_count(p, total);
}

// kLoss: the anchor's loss and the weights of d(a, .) (weight row zeroed by step 0).
template <typename T>
__device__ void loss_anchor(const RowsParams<T>& p, int64_t a, const AnchorCandidates<T>& c,
                            const SortedPositives<T>& d_ap, int64_t kept) {
  T* w = p.weights + a * p.weight_stride;
  double loss = 0.0;
  int64_t negatives = 0, nonzero = 0;
  if (kept > 0) {
    for (int64_t n = lane_id(); n < c.num_candidates; n += 32) {
      if (!c.negative(n)) continue;
      ++negatives;
      const PositiveRange r = loss_range(d_ap, kept, c.dist[n], p.rule, p.margin);
      const int64_t cover = r.size();
      if (cover == 0) continue;
      loss -= static_cast<double>(cover) * static_cast<double>(c.dist[n]);
      w[n] = -static_cast<T>(cover);
      atomicAdd(w + d_ap.index[r.begin], T(1));
      if (r.end < kept) atomicAdd(w + d_ap.index[r.end], T(-1));
    }
  }
  __syncwarp();
  T carry = 0;
  for (int64_t base = 0; base < kept; base += 32) {
    const int64_t j = base + lane_id();
    const T running = carry + warp_inclusive_scan(j < kept ? w[d_ap.index[j]] : T(0));
    if (j < kept) {
      w[d_ap.index[j]] = running;
      loss += static_cast<double>(running) *
              (static_cast<double>(d_ap[j]) + static_cast<double>(p.margin));
      nonzero += static_cast<int64_t>(running);
    }
    carry = __shfl_sync(kFullMask, running, 31);
  }
  loss = warp_sum(loss);
  nonzero = warp_sum(nonzero);
  negatives = warp_sum(negatives);
  if (lane_id() == 0) {
    p.row_loss[a] = loss;
    p.row_nonzero[a] = nonzero;
    p.row_mined[a] = p.rule == kAll ? kept * negatives : nonzero;
  }
}

// kWrite: the anchor's (selected) triplets, positives nearest first and each one's negatives
// in index order; a tile of 32 candidates numbers its mined ones by a ballot.
template <typename T>
__device__ void write_anchor(const RowsParams<T>& p, int64_t a, const AnchorCandidates<T>& c,
                             const SortedPositives<T>& d_ap, int64_t kept) {
  const int64_t* cnt = p.positive_counts + a * p.positive_stride;
  const WriteRange range = write_range(p, a);
  if (p.per_anchor >= 0) {  // the anchor's own draw, by one lane (per_anchor is small)
    int64_t total = 0;
    for (int64_t j = lane_id(); j < kept; j += 32) total += cnt[j];
    total = warp_sum(total);
    if (lane_id() == 0) {
      draw_anchor_ranks(total, p.per_anchor, p.seed, a + p.anchor_offset,
                        p.ranks + range.slot_begin);
    }
    __syncwarp();
  }
  const int64_t first_slot = range.slot_begin, slot_end = range.slot_end;
  const int64_t first_rank = range.first_rank;
  // The slot holding rank r, or -1 when r is not selected (ranks sorted; slots from `from`).
  const auto slot_of = [&](int64_t r, int64_t from) -> int64_t {
    if (p.ranks == nullptr) return first_slot + (r - first_rank);
    const int64_t s = from + first_true(slot_end - from, [&](int64_t i) {
                        return p.ranks[from + i] >= r;
                      });
    return s < slot_end && p.ranks[s] == r ? s : -1;
  };
  const auto write = [&](int64_t slot, int64_t positive, int64_t negative) {
    if (slot < first_slot || slot >= slot_end) return;
    p.out_anchor[slot] = a + p.anchor_offset;
    p.out_positive[slot] = positive;
    p.out_negative[slot] = negative;
  };
  if (p.rule == kHardest) {
    const HardestTriplet t = hardest_triplet_of_warp(c, d_ap, kept);
    if (lane_id() == 0 && t.found() && cnt[t.j] > 0) {
      write(slot_of(first_rank, first_slot), d_ap.index[t.j], t.n);
    }
    return;
  }
  int64_t slot = first_slot;  // the first slot not yet written (warp-uniform)
  int64_t rank = first_rank;  // rank of positive j's first triplet
  for (int64_t j = 0; j < kept && slot < slot_end; rank += cnt[j], ++j) {
    const int64_t end_rank = rank + cnt[j];
    if (cnt[j] == 0 || (p.ranks != nullptr && p.ranks[slot] >= end_rank)) continue;
    const T d = d_ap[j];
    int64_t next = rank;  // rank of the next mined negative of j
    // Until j's triplets are all numbered, or (sampling) none of the rest is selected.
    for (int64_t base = 0; base < c.num_candidates && next < end_rank && slot < slot_end &&
                           (p.ranks == nullptr || p.ranks[slot] < end_rank);
         base += 32) {
      const int64_t n = base + lane_id();
      const bool mined = n < c.num_candidates && c.negative(n) && mines(p.rule, d, c.dist[n], p.margin);
      const unsigned ballot = __ballot_sync(kFullMask, mined);
      if (mined) {
        const int64_t r = next + __popc(ballot & ((1u << lane_id()) - 1u));
        if (r < end_rank) write(slot_of(r, slot), d_ap.index[j], n);
      }
      next += __popc(ballot);
      if (p.ranks == nullptr) {
        slot = first_slot + (next - first_rank);
      } else {
        slot += first_true(slot_end - slot, [&](int64_t i) { return p.ranks[slot + i] >= next; });
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) triplet_rows_kernel(AnchorRows<T> s,
                                                                   RowsParams<T> p) {
  const int64_t a = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (a >= s.rows) return;  // the whole warp
  T* dist = s.dist + a * s.stride;
  prepare_row(s, p, a, dist);
  const SortedPositives<T> d_ap{s.sorted_dist + a * s.capacity,
                                s.sorted_index + a * s.capacity};
  const int64_t kept = sort_positives(s, a, dist, d_ap);
  const AnchorCandidates<T> c{nullptr, nullptr,        0,        dist,
                              s.labels, s.extra_labels, s.num_labelled, s.stride,
                              s.query_labels[a]};
  if (p.rule == kHardest && p.pass != kWrite) {
    hardest_anchor(p, a, c, d_ap, hardest_triplet_of_warp(c, d_ap, kept));
    return;
  }
  switch (p.pass) {
    case kCount:
      count_anchor(p, a, c, d_ap, kept);
      break;
    case kLoss:
      loss_anchor(p, a, c, d_ap, kept);
      break;
    default:
      write_anchor(p, a, c, d_ap, kept);
  }
}

template <typename T>
cudaError_t launch_triplet_rows(const AnchorRows<T>& s, const RowsParams<T>& p,
                                cudaStream_t stream) {
  if (s.rows == 0) return cudaSuccess;
  const int64_t blocks = (s.rows + kWarps - 1) / kWarps;
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  triplet_rows_kernel<T><<<static_cast<unsigned>(blocks), kWarps * 32, 0, stream>>>(s, p);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// The rows of up to three inputs (the queries, the bank, the extras) stacked as y (rows, d) in
// the compute type, L2-normalised when asked, with |y|^2 and ||x||: a block per row, the sums
// by common/reduce.cuh.

constexpr int kPrepareThreads = 128;

template <typename scalar_t, typename acc_t>
struct PrepareParams {
  const scalar_t* parts[3];
  int64_t part_end[3];  // rows [part_end[i - 1], part_end[i]) are parts[i]'s
  int64_t d;
  bool normalize;
  acc_t* y;
  acc_t* sq_norms;
  acc_t* lengths;
};

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kPrepareThreads)
    prepare_rows_kernel(PrepareParams<scalar_t, acc_t> p) {
  const int64_t r = blockIdx.x;
  const int part = r < p.part_end[0] ? 0 : r < p.part_end[1] ? 1 : 2;
  const scalar_t* in = p.parts[part] + (r - (part > 0 ? p.part_end[part - 1] : 0)) * p.d;
  acc_t* out = p.y + r * p.d;
  acc_t squares = 0;
  for (int64_t k = threadIdx.x; k < p.d; k += kPrepareThreads) {
    const acc_t v = static_cast<acc_t>(in[k]);
    squares += v * v;
  }
  const acc_t length = sqrt(block_sum<kPrepareThreads>(squares));
  const acc_t divisor = norm_divisor(length, p.normalize);
  squares = 0;
  for (int64_t k = threadIdx.x; k < p.d; k += kPrepareThreads) {
    const acc_t v = static_cast<acc_t>(in[k]) / divisor;
    out[k] = v;
    squares += v * v;
  }
  squares = block_sum<kPrepareThreads>(squares);
  if (threadIdx.x == 0) {
    p.sq_norms[r] = squares;
    p.lengths[r] = length;
  }
}

inline cudaError_t blocks_for(int64_t rows, unsigned* blocks) {
  if (rows > 0x7fffffff) return cudaErrorInvalidConfiguration;
  *blocks = static_cast<unsigned>(rows);
  return cudaSuccess;
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_prepare_rows(const PrepareParams<scalar_t, acc_t>& p, cudaStream_t stream) {
  unsigned blocks = 0;
  if (p.part_end[2] == 0) return cudaSuccess;
  if (const cudaError_t error = blocks_for(p.part_end[2], &blocks)) return error;
  prepare_rows_kernel<scalar_t, acc_t><<<blocks, kPrepareThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

#ifdef FGO_CUDA_CHECK
inline void* const kInstantiated[] = {
    reinterpret_cast<void*>(&launch_triplet_rows<float>),
    reinterpret_cast<void*>(&launch_triplet_rows<double>),
    reinterpret_cast<void*>(&launch_prepare_rows<float, float>),
    reinterpret_cast<void*>(&launch_prepare_rows<double, double>),
};
#endif

}  // namespace cuda
}  // namespace triplet
}  // namespace fgo
