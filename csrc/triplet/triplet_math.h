#pragma once
// The per-anchor math of triplet mining and the triplet loss, shared by the CPU kernels and
// the CUDA kernels (no torch header). An anchor sees its kept (local) positives sorted by
// (distance, index) and its distance row with the candidates' labels. The hinge
//   l(p, n) = d(a, p) - d(a, n) + margin
// grows with d(a, p), so the positives that mine a negative n form a contiguous range of
// the sorted positives, found by binary search: an anchor costs O(N log P + P) for the
// count and the loss, and nothing of size P * N is ever formed:
//   - cover_n = size of n's range, cnt_p = number of ranges holding p (difference array),
//   - loss = sum_p cnt_p * (d_ap + m) - sum_n cover_n * d_an,
//   - the gradient weights of d(a, .) are +cnt_p and -cover_n.
// Triplets are enumerated per anchor with positives nearest first and, for each positive,
// its negatives in index order; ranks (for sampling) refer to that order.

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace fgo {
namespace triplet {

// Which negatives each (anchor, positive) mines (docs/semantics.md §3). Boundaries are strict.
enum Rule : int64_t {
  kViolating = 0,  // l > 0
  kSemihard = 1,   // d_ap < d_an and l > 0
  kHardest = 2,    // farthest kept positive, nearest negative (one triplet per anchor)
  kAll = 3,        // every negative
};

enum Pass : int {
  kCount = 0,  // counts[a] = number of mined triplets
  kLoss = 1,   // row_loss, row_nonzero and the weight row of d(a, .)
  kWrite = 2,  // the (selected) triplets into out_*
};

template <typename T>
struct AnchorCandidates {
  const T* pos_dist;         // kept positives sorted by (distance, index)
  const int64_t* pos_index;  // their candidate indices
  int64_t num_pos;
  const T* dist;             // (num_candidates,) the anchor's distance to every candidate
  const int64_t* labels;        // (num_labelled,) the bank's labels
  const int64_t* extra_labels;  // (num_candidates - num_labelled,) the extras'
  int64_t num_labelled;         // candidates [0, num_labelled) are the labelled bank
  int64_t num_candidates;
  int64_t label;                // the anchor's label

  // A bank row of another class, or an extra negative of this anchor's class.
  FGO_HOST_DEVICE bool negative(int64_t n) const {
    return n < num_labelled ? labels[n] != label : extra_labels[n - num_labelled] == label;
  }
  // Same class, labelled, and not the anchor itself (self = its own index or -1).
  FGO_HOST_DEVICE bool positive(int64_t n, int64_t self) const {
    return n < num_labelled && labels[n] == label && n != self;
  }
};

// Embeddings are L2-normalised as F.normalize does: a row x is divided by max(||x||, eps).
constexpr double kNormEps = 1e-12;

// What a row of norm `length` is divided by (1 without normalisation).
template <typename T>
FGO_HOST_DEVICE T norm_divisor(T length, bool normalize) {
  return !normalize ? T(1) : length > T(kNormEps) ? length : T(kNormEps);
}

// Local positives: the ceil(f * P) nearest (guarded so that 0.6 * 5 keeps 3), at least one.
FGO_HOST_DEVICE int64_t kept_positives(int64_t num_positives, double fraction) {
  if (num_positives == 0 || fraction >= 1.0) return num_positives;
  const double k = ceil(static_cast<double>(num_positives) * fraction - 1e-9);
  return k < 1.0 ? 1 : (k > num_positives ? num_positives : static_cast<int64_t>(k));
}

// Everything a pass reads and writes, as raw pointers (rows = anchors).
template <typename T>
struct RowsParams {
  int64_t rule;
  T margin;
  int pass;
  int64_t* counts;             // kCount: (Q,) selected_count of each anchor; read by kWrite
  int64_t* positive_counts;    // kCount, read by kWrite: (Q, positive_stride) triplets of each
  int64_t positive_stride;     //   kept positive, in sorted order
  double* row_loss;            // kLoss: (Q,) sum of positive hinge values
  int64_t* row_nonzero;        // kLoss: (Q,) number of triplets with l > 0
  int64_t* row_mined;          // kLoss: (Q,) number of mined triplets
  T* weights;                  // kLoss: (Q, weight_stride) zero-initialised, d(row loss)/d(dist)
  int64_t weight_stride;
  // kWrite: the anchor's output slots and the ranks of its triplets written there follow from
  // the count pass's counts and their inclusive prefix sums (write_range).
  const int64_t* ends;         // kWrite: (Q,) counts[0] + ... + counts[a]
  int64_t* ranks;              // kWrite: nullptr (every triplet is written), or the sorted
                               //         selected ranks, slot s holding rank ranks[s]
  int64_t num_ranks;           //   their number (drawn over all anchors)
  int64_t per_anchor;          // >= 0: counts are min(triplets, per_anchor), and each anchor
                               //   draws its own ranks into ranks[its slots] (draw_anchor_ranks)
  uint64_t seed;               //   the draw's seed
  int64_t anchor_offset;       // kWrite: added to the anchor index written out
  int64_t* out_anchor;
  int64_t* out_positive;
  int64_t* out_negative;
};

// splitmix64: a counter-based generator, so each anchor's draw depends only on (seed, anchor).
struct SplitMix64 {
  uint64_t state;
  FGO_HOST_DEVICE uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  FGO_HOST_DEVICE int64_t below(int64_t n) {  // uniform in [0, n): the high word of next() * n
#if defined(__CUDA_ARCH__)
    return static_cast<int64_t>(__umul64hi(next(), static_cast<uint64_t>(n)));
#else
    const auto wide = static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n);
    return static_cast<int64_t>(wide >> 64);
#endif
  }
};

// An anchor's per-anchor draw into out[0, min(n, k)), sorted: every rank of [0, n) when
// n <= k, else k of them drawn uniformly without replacement (Floyd's algorithm; k is small,
// so membership is a scan) from the generator keyed by (seed, anchor). Returns how many.
FGO_HOST_DEVICE int64_t draw_anchor_ranks(int64_t n, int64_t k, uint64_t seed, int64_t anchor,
                                          int64_t* out) {
  if (n <= k) {
    for (int64_t i = 0; i < n; ++i) out[i] = i;
    return n;
  }
  SplitMix64 rng{seed ^ (static_cast<uint64_t>(anchor) * 0xD1B54A32D192ED03ull)};
  for (int64_t t = n - k, m = 0; t < n; ++t, ++m) {
    const int64_t r = rng.below(t + 1);
    bool taken = false;
    for (int64_t i = 0; i < m; ++i) taken = taken || out[i] == r;
    out[m] = taken ? t : r;  // t is above every earlier pick
  }
  for (int64_t i = 1; i < k; ++i) {  // insertion sort
    const int64_t v = out[i];
    int64_t j = i;
    for (; j > 0 && out[j - 1] > v; --j) out[j] = out[j - 1];
    out[j] = v;
  }
  return k;
}

// What the count pass stores for an anchor of `total` triplets: its slots in the output.
template <typename Params>
FGO_HOST_DEVICE int64_t selected_count(const Params& p, int64_t total) {
  return p.per_anchor >= 0 && total > p.per_anchor ? p.per_anchor : total;
}

// Hinge strictly positive, computed the same way everywhere (boundaries are exact).
template <typename T>
FGO_HOST_DEVICE bool violates(T d_ap, T d_an, T margin) {
  return d_ap - d_an + margin > T(0);
}

template <typename T>
FGO_HOST_DEVICE bool mines(int64_t rule, T d_ap, T d_an, T margin) {
  if (rule == kAll) return true;
  return violates(d_ap, d_an, margin) && (rule != kSemihard || d_an > d_ap);
}

// The order of candidates by (distance, index): a strict total order even with NaN (last),
// so that ranks computed from it are a permutation whatever the values.
template <typename T>
FGO_HOST_DEVICE bool nearer(T d_i, int64_t i, T d_j, int64_t j) {
  const bool nan_i = d_i != d_i, nan_j = d_j != d_j;
  if (nan_i || nan_j) return nan_i == nan_j ? i < j : nan_j;
  return d_i < d_j || (d_i == d_j && i < j);
}

struct PositiveRange {
  int64_t begin, end;
  FGO_HOST_DEVICE int64_t size() const { return end > begin ? end - begin : 0; }
};

// First j in [0, n) with pred(j) true, for a pred that is false then true (n if never).
template <typename Pred>
FGO_HOST_DEVICE int64_t first_true(int64_t n, Pred pred) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid)) hi = mid; else lo = mid + 1;
  }
  return lo;
}

// The kept positives j whose triplet (j, n) has a positive hinge and is kept by the rule
// ('all' and 'hardest' count as 'violating' here: only positive hinges carry loss).
// d_ap[j] (a pointer, or any indexable) is the distance to the j-th nearest kept positive.
template <typename T, typename Distances>
FGO_HOST_DEVICE PositiveRange loss_range(const Distances& d_ap, int64_t num_pos, T d_an,
                                         int64_t rule, T margin) {
  const int64_t begin =
      first_true(num_pos, [&](int64_t j) { return violates(T(d_ap[j]), d_an, margin); });
  // semihard also needs d_ap < d_an: j below the first positive not nearer than n
  const int64_t end = rule == kSemihard
                          ? first_true(num_pos, [&](int64_t j) { return !(T(d_ap[j]) < d_an); })
                          : num_pos;
  return {begin, end};
}

// 'hardest': the farthest kept positive (first index among equal distances, as torch.max
// picks) and the nearest negative (first index among equal distances); -1 when absent.
template <typename Distances>
FGO_HOST_DEVICE int64_t farthest_positive(const Distances& d_ap, int64_t num_pos) {
  if (num_pos == 0) return -1;
  int64_t j = num_pos - 1;
  while (j > 0 && d_ap[j - 1] == d_ap[j]) --j;
  return j;
}

template <typename T>
FGO_HOST_DEVICE int64_t nearest_negative(const AnchorCandidates<T>& c) {
  int64_t best = -1;
  for (int64_t n = 0; n < c.num_candidates; ++n) {
    if (c.negative(n) && (best < 0 || nearer(c.dist[n], n, c.dist[best], best))) best = n;
  }
  return best;
}

// Triplets of each kept positive into cnt[0..num_pos); returns their sum.
template <typename T>
FGO_HOST_DEVICE int64_t count_mined(const AnchorCandidates<T>& c, int64_t rule, T margin,
                                    int64_t* cnt) {
  for (int64_t j = 0; j < c.num_pos; ++j) cnt[j] = 0;
  if (c.num_pos == 0) return 0;
  if (rule == kHardest) {
    if (nearest_negative(c) < 0) return 0;
    cnt[farthest_positive(c.pos_dist, c.num_pos)] = 1;
    return 1;
  }
  int64_t negatives = 0;
  for (int64_t n = 0; n < c.num_candidates; ++n) {
    if (!c.negative(n)) continue;
    ++negatives;
    if (rule == kAll) continue;
    const PositiveRange r = loss_range(c.pos_dist, c.num_pos, c.dist[n], rule, margin);
    if (r.size() == 0) continue;
    ++cnt[r.begin];  // difference array
    if (r.end < c.num_pos) --cnt[r.end];
  }
  int64_t total = 0, running = 0;
  for (int64_t j = 0; j < c.num_pos; ++j) {
    running = rule == kAll ? negatives : running + cnt[j];
    cnt[j] = running;
    total += running;
  }
  return total;
}

// Loss of the anchor's mined triplets with l > 0 and its gradient weights w.r.t. d(a, .);
// weight_row is zero on entry and, for the positives, first holds the difference array.
template <typename T>
FGO_HOST_DEVICE void accumulate_loss(const AnchorCandidates<T>& c, int64_t rule, T margin,
                                     double* loss_out, int64_t* nonzero_out, int64_t* mined_out,
                                     T* weight_row) {
  double loss = 0.0;
  int64_t nonzero = 0, mined = 0;
  if (rule == kHardest) {
    const int64_t j = farthest_positive(c.pos_dist, c.num_pos), n = j < 0 ? -1 : nearest_negative(c);
    mined = n >= 0 ? 1 : 0;
    if (n >= 0 && violates(c.pos_dist[j], c.dist[n], margin)) {
      loss = static_cast<double>(c.pos_dist[j]) - static_cast<double>(c.dist[n]) + margin;
      nonzero = 1;
      weight_row[c.pos_index[j]] = T(1);
      weight_row[n] = T(-1);
    }
  } else if (c.num_pos > 0) {
    int64_t negatives = 0;
    for (int64_t n = 0; n < c.num_candidates; ++n) {
      if (!c.negative(n)) continue;
      ++negatives;
      const PositiveRange r = loss_range(c.pos_dist, c.num_pos, c.dist[n], rule, margin);
      const int64_t cover = r.size();
      if (cover == 0) continue;
      loss -= static_cast<double>(cover) * static_cast<double>(c.dist[n]);
      weight_row[n] = -static_cast<T>(cover);
      weight_row[c.pos_index[r.begin]] += T(1);
      if (r.end < c.num_pos) weight_row[c.pos_index[r.end]] -= T(1);
    }
    T running = 0;
    for (int64_t j = 0; j < c.num_pos; ++j) {
      running += weight_row[c.pos_index[j]];
      weight_row[c.pos_index[j]] = running;
      loss += static_cast<double>(running) *
              (static_cast<double>(c.pos_dist[j]) + static_cast<double>(margin));
      nonzero += static_cast<int64_t>(running);
    }
    mined = rule == kAll ? c.num_pos * negatives : nonzero;
  }
  *loss_out = loss;
  *nonzero_out = nonzero;
  *mined_out = mined;
}

// Where an anchor's triplets go: output slots [slot_begin, slot_end) and the rank of its first
// triplet in the numbering that p.ranks refers to.
struct WriteRange {
  int64_t first_rank, slot_begin, slot_end;
};

template <typename T>
FGO_HOST_DEVICE WriteRange write_range(const RowsParams<T>& p, int64_t a) {
  const int64_t end = p.ends[a], begin = end - p.counts[a];
  if (p.per_anchor >= 0) return {0, begin, end};  // its own ranks, numbered from 0
  if (p.ranks == nullptr) return {begin, begin, end};
  const int64_t* ranks = p.ranks;
  return {begin, first_true(p.num_ranks, [&](int64_t i) { return ranks[i] >= begin; }),
          first_true(p.num_ranks, [&](int64_t i) { return ranks[i] >= end; })};
}

// Writes the anchor's triplets: every one when p.ranks == nullptr, else those whose ranks
// are p.ranks[range.slot_begin .. range.slot_end) (sorted, within the anchor).
// cnt: the kept positives' triplet counts from the count pass.
template <typename T>
FGO_HOST_DEVICE void write_mined(const AnchorCandidates<T>& c, const RowsParams<T>& p,
                                 int64_t a, const int64_t* cnt) {
  const WriteRange range = write_range(p, a);
  if (p.per_anchor >= 0) {
    int64_t total = 0;
    for (int64_t j = 0; j < c.num_pos; ++j) total += cnt[j];
    draw_anchor_ranks(total, p.per_anchor, p.seed, a + p.anchor_offset,
                      p.ranks + range.slot_begin);
  }
  const int64_t slot_end = range.slot_end;
  int64_t slot = range.slot_begin;
  const int64_t hardest_n = p.rule == kHardest ? nearest_negative(c) : -1;
  int64_t rank = range.first_rank;  // rank of positive j's first triplet
  for (int64_t j = 0; j < c.num_pos && slot < slot_end; rank += cnt[j], ++j) {
    if (cnt[j] == 0 || (p.ranks && p.ranks[slot] >= rank + cnt[j])) continue;
    int64_t r = rank;  // rank of the next mined negative of j
    for (int64_t n = 0; n < c.num_candidates && slot < slot_end && r < rank + cnt[j]; ++n) {
      if (!c.negative(n)) continue;
      if (p.rule == kHardest ? n != hardest_n : !mines(p.rule, c.pos_dist[j], c.dist[n], p.margin)) {
        continue;
      }
      if (!p.ranks || p.ranks[slot] == r) {
        p.out_anchor[slot] = a + p.anchor_offset;
        p.out_positive[slot] = c.pos_index[j];
        p.out_negative[slot] = n;
        ++slot;
      }
      ++r;
    }
  }
}

template <typename T>
FGO_HOST_DEVICE void run_anchor(const RowsParams<T>& p, int64_t a, const AnchorCandidates<T>& c) {
  switch (p.pass) {
    case kCount:
      p.counts[a] = selected_count(
          p, count_mined(c, p.rule, p.margin, p.positive_counts + a * p.positive_stride));
      break;
    case kLoss:
      accumulate_loss(c, p.rule, p.margin, p.row_loss + a, p.row_nonzero + a, p.row_mined + a,
                      p.weights + a * p.weight_stride);
      break;
    default:
      write_mined(c, p, a, p.positive_counts + a * p.positive_stride);
  }
}

}  // namespace triplet
}  // namespace fgo
