// CPU passes of triplet mining / loss: the distances (our own kernel: fixed summation order),
// then at::parallel_for over anchors.
// Each anchor gathers its kept positives sorted by (distance, index) and runs triplet_math.h
// on its row. Every anchor writes only its own outputs, so results do not depend on the
// thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "triplet/triplet_args.h"

namespace fgo {
namespace {

// One anchor's kept positives, sorted by (distance, index), in reusable buffers.
template <typename T>
struct SortedPositives {
  std::vector<int64_t> index;
  std::vector<T> dist;
  int64_t all = 0;  // positives before the local ones are kept

  void gather(const triplet::AnchorCandidates<T>& c, int64_t self, double fraction) {
    index.clear();
    for (int64_t n = 0; n < c.num_labelled; ++n) {
      if (c.positive(n, self)) index.push_back(n);
    }
    all = static_cast<int64_t>(index.size());
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

PreparedRows prepare_rows(Cpu, at::ArrayRef<at::Tensor> parts, bool normalize) {
  int64_t rows = 0;
  for (const at::Tensor& part : parts) rows += part.size(0);
  const int64_t d = parts[0].size(1);
  PreparedRows out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, parts[0].scalar_type(),
                                  "triplet_prepare_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const at::TensorOptions options =
        parts[0].options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    out.y = at::empty({rows, d}, options);
    out.lengths = at::empty({rows}, options);
    std::vector<const scalar_t*> sources;  // each row's
    sources.reserve(rows);
    std::vector<at::Tensor> contiguous(parts.begin(), parts.end());
    for (at::Tensor& part : contiguous) {
      part = part.contiguous();
      const scalar_t* first = part.data_ptr<scalar_t>();
      for (int64_t r = 0; r < part.size(0); ++r) sources.push_back(first + r * d);
    }
    acc_t* y = out.y.data_ptr<acc_t>();
    acc_t* lengths = out.lengths.data_ptr<acc_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(d, 1)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        acc_t* row = y + r * d;
        acc_t squares = 0;
        for (int64_t k = 0; k < d; ++k) {
          row[k] = static_cast<acc_t>(sources[r][k]);
          squares += row[k] * row[k];
        }
        lengths[r] = std::sqrt(squares);
        if (!normalize) continue;
        const acc_t divisor = triplet::norm_divisor(lengths[r], true);
        for (int64_t k = 0; k < d; ++k) row[k] /= divisor;
      }
    });
  });
  return out;
}

void candidate_distances(Cpu, TripletCandidates& c, const at::Tensor& y_query,
                         const at::Tensor& y_candidates, int64_t) {
  c.dist = squared_distances(Cpu{}, y_query, y_candidates);
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_distances_check_cpu", [&] {
    scalar_t* dist = c.dist.data_ptr<scalar_t>();
    bool finite = true;
    for (int64_t i = 0; i < c.dist.numel(); ++i) finite = finite && std::isfinite(dist[i]);
    TORCH_CHECK_VALUE(finite, "triplet: the embeddings must be finite and their squared "
                      "distances must fit in their dtype (", c.dist.scalar_type(), "; found NaN "
                      "or Inf; normalise the embeddings or use float64)");
    if (!c.squared) {
      for (int64_t i = 0; i < c.dist.numel(); ++i) dist[i] = std::sqrt(dist[i]);
    }
  });
}

void triplet_rows(Cpu, const TripletArgs& rows) {
  const TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0), r = c.dist.size(1);
  // Undefined query_indices: anchor a is bank row a.
  const int64_t* query_indices =
      c.query_indices.defined() ? c.query_indices.data_ptr<int64_t>() : nullptr;
  if (q > 0 && query_indices != nullptr) {
    const auto [lowest, highest] = std::minmax_element(query_indices, query_indices + q);
    TORCH_CHECK_VALUE(*lowest >= -1 && *highest < c.num_labelled,
                      "triplet: query_indices must be -1 or an index into bank_embeddings' ",
                      c.num_labelled, " rows, got values in [", *lowest, ", ", *highest, "]");
  }
  AT_DISPATCH_FLOATING_TYPES(c.dist.scalar_type(), "triplet_rows_cpu", [&] {
    const triplet::RowsParams<scalar_t> params = triplet_rows_params<scalar_t>(rows);
    const scalar_t* dist = c.dist.data_ptr<scalar_t>();
    const int64_t* labels = c.labels.data_ptr<int64_t>();
    const int64_t* extra_labels = c.extra_labels.data_ptr<int64_t>();
    const int64_t* query_labels = c.query_labels.data_ptr<int64_t>();
    at::parallel_for(0, q, 1, [&](int64_t begin, int64_t end) {
      SortedPositives<scalar_t> positives;
      for (int64_t a = begin; a < end; ++a) {
        triplet::AnchorCandidates<scalar_t> candidates{
            nullptr, nullptr, 0, dist + a * r, labels, extra_labels, c.num_labelled, r,
            query_labels[a]};
        positives.gather(candidates, query_indices != nullptr ? query_indices[a] : a,
                         c.positive_fraction);
        candidates.pos_dist = positives.dist.data();
        candidates.pos_index = positives.index.data();
        candidates.num_pos = static_cast<int64_t>(positives.index.size());
        TORCH_CHECK_VALUE(rows.pass == triplet::kLoss || positives.all <= params.positive_stride,
                          "triplet_mine: max_positives (", params.positive_stride,
                          ") is below an anchor's ", positives.all, " positives");
        triplet::run_anchor(params, a, candidates);
      }
    });
  });
}

}  // namespace fgo
