// CPU passes of triplet mining / loss: at::parallel_for over anchors. Each anchor gathers
// its kept positives sorted by (distance, index) and runs triplet_math.h on its row.
// Every anchor writes only its own outputs, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "triplet/triplet_args.h"

namespace fgo {
namespace {

// One anchor's kept positives, sorted by (distance, index), in reusable buffers.
template <typename T>
struct SortedPositives {
  std::vector<int64_t> index;
  std::vector<T> dist;

  void gather(const triplet::AnchorCandidates<T>& c, int64_t self, double fraction) {
    index.clear();
    for (int64_t n = 0; n < c.num_labelled; ++n) {
      if (c.positive(n, self)) index.push_back(n);
    }
    const T* d = c.dist;
    const auto nearer = [d](int64_t i, int64_t j) { return d[i] < d[j] || (d[i] == d[j] && i < j); };
    const int64_t keep = triplet::kept_positives(static_cast<int64_t>(index.size()), fraction);
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

void triplet_rows(Cpu, const TripletArgs& rows) {
  const TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0), r = c.dist.size(1);
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cpu", [&] {
    const triplet::RowsParams<scalar_t> params = triplet_rows_params<scalar_t>(rows);
    const scalar_t* dist = c.dist.data_ptr<scalar_t>();
    const int64_t* labels = c.labels.data_ptr<int64_t>();
    const int64_t* query_labels = c.query_labels.data_ptr<int64_t>();
    const int64_t* query_indices = c.query_indices.data_ptr<int64_t>();
    at::parallel_for(0, q, 1, [&](int64_t begin, int64_t end) {
      SortedPositives<scalar_t> positives;
      for (int64_t a = begin; a < end; ++a) {
        triplet::AnchorCandidates<scalar_t> candidates{
            nullptr, nullptr, 0, dist + a * r, labels, c.num_labelled, r, query_labels[a]};
        positives.gather(candidates, query_indices[a], c.positive_fraction);
        candidates.pos_dist = positives.dist.data();
        candidates.pos_index = positives.index.data();
        candidates.num_pos = static_cast<int64_t>(positives.index.size());
        triplet::run_anchor(params, a, candidates);
      }
    });
  });
}

}  // namespace fgo
