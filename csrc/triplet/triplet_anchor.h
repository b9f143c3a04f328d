#pragma once
// The per-anchor math of triplet mining and the triplet loss, shared by the CPU kernels and
// the CUDA kernels (no torch header). Each anchor sees its candidates sorted by
// (distance, index): the kept (local) positives and all negatives. Because the hinge
//   l(p, n) = d(a, p) - d(a, n) + margin
// falls as d(a, n) grows, the negatives a positive mines form a contiguous range of the
// sorted list, found by binary search, and the range bounds never decrease from one
// positive to the next (positives are sorted too). So an anchor costs O((P + N) + P log N)
// instead of O(P * N), and nothing of size P * N is ever formed:
//   - the count is the sum of the range lengths,
//   - the loss is sum_p cnt_p * (d_ap + m) - sum_n cover_n * d_an, where cover_n is the
//     number of positives whose range holds n (two monotone pointers),
//   - the gradient weights of d(a, .) are +cnt_p and -cover_n,
//   - triplet number r of the anchor is found by walking the range lengths.
// Triplets are enumerated per anchor with positives nearest first and, for each positive,
// negatives nearest first; ranks (for sampling) refer to that order.

#include <cstdint>

#include "common/host_device.h"

namespace fgo {
namespace triplet {

// Which negatives each (anchor, positive) mines (DESIGN section 4). Boundaries are strict.
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
  const T* pos_dist;           // kept positives sorted by (distance, index)
  const int64_t* pos_index;    // their reference indices
  int64_t num_pos;
  const T* neg_dist;           // negatives sorted by (distance, index)
  const int64_t* neg_index;
  int64_t num_neg;
};

// Everything a pass reads and writes, as raw pointers (rows = anchors).
template <typename T>
struct RowsParams {
  int64_t rule;
  T margin;
  int pass;
  int64_t* counts;             // kCount: (Q,)
  double* row_loss;            // kLoss: (Q,) sum of positive hinge values
  int64_t* row_nonzero;        // kLoss: (Q,) number of triplets with l > 0
  T* weights;                  // kLoss: (Q, weight_stride) zero-initialised, d(row loss)/d(dist)
  int64_t weight_stride;
  const int64_t* first_rank;   // kWrite: (Q,) rank of the anchor's first triplet
  const int64_t* slot_begin;   // kWrite: (Q+1,) the anchor's output slots [slot_begin[a], slot_begin[a+1])
  const int64_t* ranks;        // kWrite: sorted selected ranks (slot s holds rank ranks[s]), or
                               //         nullptr when every triplet is written
  int64_t anchor_offset;       // kWrite: added to the anchor index written out
  int64_t* out_anchor;
  int64_t* out_positive;
  int64_t* out_negative;
};

// First i in [0, n) with d_ap - d[i] + margin <= 0 (n if none): the violating prefix.
template <typename T>
FGO_HOST_DEVICE int64_t violating_end(T d_ap, const T* d, int64_t n, T margin) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (d_ap - d[mid] + margin > T(0)) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// First i in [0, n) with d[i] > d_ap (n if none).
template <typename T>
FGO_HOST_DEVICE int64_t farther_begin(T d_ap, const T* d, int64_t n) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (d[mid] <= d_ap) lo = mid + 1; else hi = mid;
  }
  return lo;
}

struct NegativeRange {
  int64_t begin, end;
  FGO_HOST_DEVICE int64_t size() const { return end - begin; }
};

// Negatives of positive j with a positive hinge that the rule keeps.
template <typename T>
FGO_HOST_DEVICE NegativeRange loss_range(const AnchorCandidates<T>& c, int64_t j, int64_t rule,
                                         T margin) {
  const T d_ap = c.pos_dist[j];
  const int64_t begin = rule == kSemihard ? farther_begin(d_ap, c.neg_dist, c.num_neg) : 0;
  const int64_t end = violating_end(d_ap, c.neg_dist, c.num_neg, margin);
  return {begin, end > begin ? end : begin};
}

// Negatives positive j mines: the loss range, or all of them for 'all' / 'hardest'.
template <typename T>
FGO_HOST_DEVICE NegativeRange mined_range(const AnchorCandidates<T>& c, int64_t j, int64_t rule,
                                          T margin) {
  if (rule == kAll || rule == kHardest) return {0, c.num_neg};
  return loss_range(c, j, rule, margin);
}

// 'hardest' keeps the farthest kept positive (the first index among equal distances, as
// torch.max picks) and the nearest negative; anchors lacking either mine nothing.
template <typename T>
FGO_HOST_DEVICE AnchorCandidates<T> hardest_only(AnchorCandidates<T> c) {
  if (c.num_pos == 0 || c.num_neg == 0) {
    c.num_pos = 0;
    return c;
  }
  int64_t j = c.num_pos - 1;
  while (j > 0 && c.pos_dist[j - 1] == c.pos_dist[j]) --j;
  c.pos_dist += j;
  c.pos_index += j;
  c.num_pos = 1;
  c.num_neg = 1;
  return c;
}

template <typename T>
FGO_HOST_DEVICE int64_t count_mined(const AnchorCandidates<T>& c, int64_t rule, T margin) {
  if (rule == kAll || rule == kHardest) return c.num_pos * c.num_neg;
  int64_t count = 0;
  for (int64_t j = 0; j < c.num_pos; ++j) count += loss_range(c, j, rule, margin).size();
  return count;
}

// Loss of the anchor's mined triplets with l > 0 and its gradient weights w.r.t. d(a, .).
template <typename T>
FGO_HOST_DEVICE void accumulate_loss(const AnchorCandidates<T>& c, int64_t rule, T margin,
                                     double* loss_out, int64_t* nonzero_out, T* weight_row) {
  double loss = 0.0;
  int64_t nonzero = 0;
  for (int64_t j = 0; j < c.num_pos; ++j) {
    const int64_t cnt = loss_range(c, j, rule, margin).size();
    loss += static_cast<double>(cnt) * (static_cast<double>(c.pos_dist[j]) + static_cast<double>(margin));
    nonzero += cnt;
    weight_row[c.pos_index[j]] = static_cast<T>(cnt);
  }
  if (nonzero > 0) {
    // cover(i) = #{j : begin_j <= i} - #{j : end_j <= i}; both bounds are non-decreasing in j.
    int64_t opened = 0, closed = 0;
    NegativeRange next_open = loss_range(c, 0, rule, margin), next_close = next_open;
    const int64_t last = loss_range(c, c.num_pos - 1, rule, margin).end;
    for (int64_t i = 0; i < last; ++i) {
      while (opened < c.num_pos && next_open.begin <= i) {
        if (++opened < c.num_pos) next_open = loss_range(c, opened, rule, margin);
      }
      while (closed < c.num_pos && next_close.end <= i) {
        if (++closed < c.num_pos) next_close = loss_range(c, closed, rule, margin);
      }
      const int64_t cover = opened - closed;
      if (cover > 0) {
        loss -= static_cast<double>(cover) * static_cast<double>(c.neg_dist[i]);
        weight_row[c.neg_index[i]] = -static_cast<T>(cover);
      }
    }
  }
  *loss_out = loss;
  *nonzero_out = nonzero;
}

// Writes the anchor's triplets: every one when p.ranks == nullptr, else those whose ranks
// are p.ranks[slot_begin[a] .. slot_begin[a+1]) (validated: sorted, within the anchor).
template <typename T>
FGO_HOST_DEVICE void write_mined(const AnchorCandidates<T>& c, const RowsParams<T>& p,
                                 int64_t a) {
  const int64_t slot_end = p.slot_begin[a + 1];
  int64_t slot = p.slot_begin[a];
  int64_t rank = p.first_rank[a];  // rank of positive j's first triplet
  for (int64_t j = 0; j < c.num_pos && slot < slot_end; ++j) {
    const NegativeRange range = mined_range(c, j, p.rule, p.margin);
    const int64_t next = rank + range.size();
    for (int64_t i = range.begin; slot < slot_end; ++i) {
      if (p.ranks) {
        if (p.ranks[slot] >= next) break;
        i = range.begin + (p.ranks[slot] - rank);
      } else if (i == range.end) {
        break;
      }
      p.out_anchor[slot] = a + p.anchor_offset;
      p.out_positive[slot] = c.pos_index[j];
      p.out_negative[slot] = c.neg_index[i];
      ++slot;
    }
    rank = next;
  }
}

template <typename T>
FGO_HOST_DEVICE void run_anchor(const RowsParams<T>& p, int64_t a, AnchorCandidates<T> c) {
  if (p.rule == kHardest) c = hardest_only(c);
  switch (p.pass) {
    case kCount:
      p.counts[a] = count_mined(c, p.rule, p.margin);
      break;
    case kLoss:
      accumulate_loss(c, p.rule, p.margin, p.row_loss + a, p.row_nonzero + a,
                      p.weights + a * p.weight_stride);
      break;
    default:
      write_mined(c, p, a);
  }
}

}  // namespace triplet
}  // namespace fgo
