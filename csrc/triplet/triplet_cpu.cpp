// CPU passes of triplet mining / loss: the distances (our own kernel: fixed summation order),
// then at::parallel_for over anchors.
// Each anchor gathers its kept positives sorted by (distance, index) and runs triplet_math.h
// on its row. Every anchor writes only its own outputs, so results do not depend on the
// thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

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
    const auto nearer = [d](int64_t i, int64_t j) { return triplet::nearer(d[i], i, d[j], j); };
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

// Dot products of QT rows of q with RT rows of r (rows `dim` apart) into out[a][b]: SIMD lanes,
// then their sum by a fixed shuffle tree, then the tail. Every (a, b) is summed in this one order,
// whatever the tile shape, so a product's bits do not depend on which tile computed it.
template <typename T, int QT, int RT>
void dot_tile(const T* q, const T* r, int64_t dim, T* out, int64_t out_stride) {
  using Vec = at::vec::Vectorized<T>;
  Vec acc[QT][RT];
  for (int a = 0; a < QT; ++a) {
    for (int b = 0; b < RT; ++b) acc[a][b] = Vec(T(0));
  }
  int64_t k = 0;
  for (; k + Vec::size() <= dim; k += Vec::size()) {
    Vec rv[RT];
    for (int b = 0; b < RT; ++b) rv[b] = Vec::loadu(r + b * dim + k);
    for (int a = 0; a < QT; ++a) {
      const Vec qv = Vec::loadu(q + a * dim + k);
      for (int b = 0; b < RT; ++b) acc[a][b] = at::vec::fmadd(qv, rv[b], acc[a][b]);
    }
  }
  for (int a = 0; a < QT; ++a) {
    for (int b = 0; b < RT; ++b) {
      T sum = at::vec::vec_reduce_all<T>([](Vec& x, Vec& y) { return x + y; }, acc[a][b]);
      for (int64_t t = k; t < dim; ++t) sum += q[a * dim + t] * r[b * dim + t];
      out[a * out_stride + b] = sum;
    }
  }
}

}  // namespace

at::Tensor squared_distances(Cpu, const at::Tensor& q, const at::Tensor& r) {
  // Register tiles of 4 queries x 2 references, inside cache tiles of kQueries x kRefs.
  constexpr int64_t kQueries = 16, kRefs = 64, kQT = 4, kRT = 2;
  const int64_t nq = q.size(0), nr = r.size(0), dim = q.size(1);
  at::Tensor dot = at::empty({nq, nr}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "triplet_distances_cpu", [&] {
    const scalar_t* qd = q.data_ptr<scalar_t>();
    const scalar_t* rd = r.data_ptr<scalar_t>();
    scalar_t* out = dot.data_ptr<scalar_t>();
    at::parallel_for(0, (nq + kQueries - 1) / kQueries, 1, [&](int64_t begin, int64_t end) {
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t i0 = tile * kQueries, i1 = std::min(nq, i0 + kQueries);
        for (int64_t j0 = 0; j0 < nr; j0 += kRefs) {
          const int64_t j1 = std::min(nr, j0 + kRefs);
          for (int64_t i = i0; i < i1; i += kQT) {
            for (int64_t j = j0; j < j1; j += kRT) {
              scalar_t* o = out + i * nr + j;
              if (i + kQT <= i1 && j + kRT <= j1) {
                dot_tile<scalar_t, kQT, kRT>(qd + i * dim, rd + j * dim, dim, o, nr);
                continue;
              }
              for (int64_t a = 0; a < std::min(kQT, i1 - i); ++a) {
                for (int64_t b = 0; b < std::min(kRT, j1 - j); ++b) {
                  dot_tile<scalar_t, 1, 1>(qd + (i + a) * dim, rd + (j + b) * dim, dim,
                                           o + a * nr + b, nr);
                }
              }
            }
          }
        }
      }
    });
  });
  // |q|^2 + |r|^2 - 2 q.r, the norms being the same fixed-order sums; clamped at 0.
  const at::Tensor q_norms = dot.new_empty({nq}), r_norms = dot.new_empty({nr});
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "triplet_norms_cpu", [&] {
    const auto norms = [dim](const scalar_t* x, int64_t n, scalar_t* out) {
      at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          dot_tile<scalar_t, 1, 1>(x + i * dim, x + i * dim, dim, out + i, 1);
        }
      });
    };
    norms(q.data_ptr<scalar_t>(), nq, q_norms.data_ptr<scalar_t>());
    norms(r.data_ptr<scalar_t>(), nr, r_norms.data_ptr<scalar_t>());
  });
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "triplet_combine_cpu", [&] {
    scalar_t* out = dot.data_ptr<scalar_t>();
    const scalar_t* qn = q_norms.data_ptr<scalar_t>();
    const scalar_t* rn = r_norms.data_ptr<scalar_t>();
    at::parallel_for(0, nq, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t j = 0; j < nr; ++j) {
          const scalar_t v = qn[i] + rn[j] - 2 * out[i * nr + j];
          out[i * nr + j] = v < 0 ? scalar_t(0) : v;  // NaN stays NaN, for the finite check
        }
      }
    });
  });
  return dot;
}

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
