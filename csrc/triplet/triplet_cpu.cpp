// CPU passes of triplet mining / loss: at::parallel_for over anchors. Each anchor gathers
// its candidates from the masks, sorts them by (distance, index) and runs triplet_anchor.h.
// Every anchor writes only its own outputs, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "triplet/triplet.h"

namespace fgo {
namespace {

// One anchor's candidates of one kind, sorted by (distance, index), in reusable buffers.
template <typename T>
struct SortedCandidates {
  std::vector<int64_t> index;
  std::vector<T> dist;

  void gather(const T* d, const bool* mask, int64_t n, int64_t keep) {
    index.clear();
    for (int64_t i = 0; i < n; ++i) {
      if (mask[i]) index.push_back(i);
    }
    const auto nearer = [d](int64_t i, int64_t j) { return d[i] < d[j] || (d[i] == d[j] && i < j); };
    keep = std::min<int64_t>(keep, static_cast<int64_t>(index.size()));
    if (keep < static_cast<int64_t>(index.size())) {
      std::nth_element(index.begin(), index.begin() + keep, index.end(), nearer);
      index.resize(keep);
    }
    std::sort(index.begin(), index.end(), nearer);
    dist.resize(index.size());
    for (size_t k = 0; k < index.size(); ++k) dist[k] = d[index[k]];
  }
};

}  // namespace

void triplet_rows_cpu(const TripletRows& rows) {
  const TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0), r = c.dist.size(1);
  const at::Tensor positive = c.positive.contiguous(), negative = c.negative.contiguous();
  const at::Tensor keep = c.keep.contiguous();
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cpu", [&] {
    const triplet::RowsParams<scalar_t> params = triplet_rows_params<scalar_t>(rows);
    const scalar_t* dist = c.dist.data_ptr<scalar_t>();
    const bool* pos = positive.data_ptr<bool>();
    const bool* neg = negative.data_ptr<bool>();
    const int64_t* kept = keep.data_ptr<int64_t>();
    at::parallel_for(0, q, 1, [&](int64_t begin, int64_t end) {
      SortedCandidates<scalar_t> positives, negatives;
      for (int64_t a = begin; a < end; ++a) {
        const scalar_t* d = dist + a * r;
        positives.gather(d, pos + a * r, r, kept[a]);
        negatives.gather(d, neg + a * r, r, r);
        const triplet::AnchorCandidates<scalar_t> candidates{
            positives.dist.data(), positives.index.data(), static_cast<int64_t>(positives.index.size()),
            negatives.dist.data(), negatives.index.data(), static_cast<int64_t>(negatives.index.size())};
        triplet::run_anchor(params, a, candidates);
      }
    });
  });
}

}  // namespace fgo
