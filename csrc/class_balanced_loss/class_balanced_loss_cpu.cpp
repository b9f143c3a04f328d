// CPU kernels of the class-balanced loss family: at::parallel_for over rows, each row in SIMD
// vectors (at::vec::Vectorized; AVX2 + Sleef when the build enables it) and a scalar tail, one
// generic body serving both. The gradient is written in the same passes as the loss; the only
// temporaries are per-row scalars.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "class_balanced_loss/class_balanced_loss_args.h"
#include "class_balanced_loss/class_balanced_loss_math.h"

namespace fgo {
namespace {

template <typename scalar_t>
struct VecOps {
  using V = at::vec::Vectorized<scalar_t>;
  static V exp(const V& x) { return x.exp(); }
  static V log1p(const V& x) { return x.log1p(); }
  static V abs(const V& x) { return x.abs(); }
  static V relu(const V& x) { return at::vec::maximum(x, V(0)); }
  static V pow(const V& x, const V& y) { return x.pow(y); }
  static V select_nonneg(const V& z, const V& a, const V& b) { return V::blendv(b, a, z >= V(0)); }
};

struct ScalarOps {
  template <typename T> static T exp(T x) { return std::exp(x); }
  template <typename T> static T log(T x) { return std::log(x); }
  template <typename T> static T log1p(T x) { return std::log1p(x); }
  template <typename T> static T abs(T x) { return std::abs(x); }
  template <typename T> static T relu(T x) { return x > T(0) ? x : T(0); }
  template <typename T> static T pow(T x, T y) { return std::pow(x, y); }
  template <typename T> static T select_nonneg(T z, T a, T b) { return z >= T(0) ? a : b; }
};

// A row is walked as full vectors, then one element at a time: f(j, V()) with V the vector
// type, then the scalar type. Bodies are generic lambdas over V.
template <typename scalar_t, typename F>
void for_each_chunk(int64_t c, const F& f) {
  using Vec = at::vec::Vectorized<scalar_t>;
  int64_t j = 0;
  for (; j + Vec::size() <= c; j += Vec::size()) f(j, Vec());
  for (; j < c; ++j) f(j, scalar_t());
}

template <typename scalar_t>
at::vec::Vectorized<scalar_t> load(const scalar_t* p, const at::vec::Vectorized<scalar_t>&) {
  return at::vec::Vectorized<scalar_t>::loadu(p);
}
template <typename scalar_t>
scalar_t load(const scalar_t* p, scalar_t) { return *p; }
template <typename scalar_t>
void store(const at::vec::Vectorized<scalar_t>& v, scalar_t* p) { v.store(p); }
template <typename scalar_t>
void store(scalar_t v, scalar_t* p) { *p = v; }

template <typename scalar_t, typename V>
using OpsOf = std::conditional_t<std::is_same_v<V, scalar_t>, ScalarOps, VecOps<scalar_t>>;

// 1 at class y among the chunk's classes j, j + 1, ..., else 0.
template <typename scalar_t>
at::vec::Vectorized<scalar_t> one_hot(int64_t y, int64_t j, const at::vec::Vectorized<scalar_t>&) {
  using Vec = at::vec::Vectorized<scalar_t>;
  if (y < j || y >= j + Vec::size()) return Vec(0);
  scalar_t lanes[Vec::size()] = {};
  lanes[y - j] = scalar_t(1);
  return Vec::loadu(lanes);
}
template <typename scalar_t>
scalar_t one_hot(int64_t y, int64_t j, scalar_t) { return scalar_t(j == y ? 1 : 0); }

// Sum or maximum over a row's vectors and tail, in a fixed order.
template <typename scalar_t, bool kMax>
struct RowReduce {
  using Vec = at::vec::Vectorized<scalar_t>;
  static constexpr scalar_t kInit = kMax ? -std::numeric_limits<scalar_t>::infinity() : 0;
  Vec lanes = Vec(kInit);
  scalar_t tail = kInit;

  // NaN propagates through the maximum as through at::vec::maximum.
  static scalar_t combine(scalar_t a, scalar_t b) {
    return kMax ? (b > a || std::isnan(b) ? b : a) : a + b;
  }
  void add(const Vec& v) { lanes = kMax ? at::vec::maximum(lanes, v) : lanes + v; }
  void add(scalar_t v) { tail = combine(tail, v); }
  scalar_t total() const {
    scalar_t buf[Vec::size()];
    lanes.store(buf);
    scalar_t r = kInit;
    for (int64_t i = 0; i < Vec::size(); ++i) r = combine(r, buf[i]);
    return combine(r, tail);
  }
};

// One row's inputs. Its target is the soft / multi-hot row t, or (t == nullptr) class y.
template <typename scalar_t>
struct RowView {
  const scalar_t* z;
  const scalar_t* t;
  int64_t y;
  scalar_t w;  // the row's weight
  scalar_t* g;  // the row's gradient, or nullptr
};

template <typename scalar_t, typename V>
V target_of(const RowView<scalar_t>& r, int64_t j, V tag) {
  return r.t != nullptr ? load(r.t + j, tag) : one_hot(r.y, j, tag);
}

// Sigmoid / focal terms of one row; returns the weighted row loss.
template <typename scalar_t, bool kFocal>
scalar_t sigmoid_row(const RowView<scalar_t>& r, int64_t c, scalar_t gamma) {
  RowReduce<scalar_t, false> loss;
  for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
    using V = decltype(tag);
    // The true class's own term, not a t = 0 term corrected afterwards: that correction
    // (subtracting softplus(z_y) from the row sum) cancels catastrophically for large z_y.
    const auto terms = cb::sigmoid_terms<V, OpsOf<scalar_t, V>, kFocal>(
        load(r.z + j, tag), target_of(r, j, tag), V(gamma));
    loss.add(terms.loss);
    if (r.g != nullptr) store(terms.grad * V(r.w), r.g + j);
  });
  return r.w * loss.total();
}

// The softmax family's logits v = z + b - margin onehot(y) and their scaled differences
// d = s (v - max v) from the row maximum (class_balanced_loss_math.h).
template <typename scalar_t>
struct SoftmaxLogits {
  const scalar_t* offsets;  // b, or nullptr
  scalar_t margin;          // the true class's margin, 0 without margins
  scalar_t scale;           // s

  template <typename V>
  V at(const RowView<scalar_t>& r, int64_t j, V tag) const {
    V v = load(r.z + j, tag);
    if (offsets != nullptr) v = v + load(offsets + j, tag);
    if (margin != scalar_t(0)) v = v - one_hot(r.y, j, tag) * V(margin);
    return v;
  }

  template <typename V>
  V difference(const RowView<scalar_t>& r, int64_t j, V tag, scalar_t max) const {
    return (at(r, j, tag) - V(max)) * V(scale);
  }
};

// Softmax loss of one row (docs/semantics.md §4.2); returns the weighted row loss.
template <typename scalar_t, bool kFocal>
scalar_t softmax_row(const RowView<scalar_t>& r, int64_t c, const SoftmaxLogits<scalar_t>& u,
                     scalar_t gamma) {
  RowReduce<scalar_t, true> max;
  for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) { max.add(u.at(r, j, tag)); });
  const scalar_t m = max.total();
  // Classes strictly below the maximum and ties at it; exp(d) parked in the gradient.
  RowReduce<scalar_t, false> below, ties;
  for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
    using V = decltype(tag);
    using Ops = OpsOf<scalar_t, V>;
    const V d = u.difference(r, j, tag, m);
    const V e = Ops::exp(d);
    below.add(Ops::select_nonneg(d, V(0), e));
    ties.add(Ops::select_nonneg(d, V(1), V(0)));
    if (r.g != nullptr) store(e, r.g + j);
  });
  const auto sums = cb::SoftmaxRowSums<scalar_t>::template from<ScalarOps>(below.total(),
                                                                          ties.total());
  const scalar_t sw = u.scale * r.w;  // d(loss)/dz = s d(loss)/du
  if (r.t == nullptr) {
    // One target class: d(loss)/du_k = w (onehot_k a_y - p_k a_y).
    const scalar_t d_y = u.difference(r, r.y, scalar_t(), m);
    const auto ty = cb::softmax_terms<scalar_t, ScalarOps, kFocal>(d_y, std::exp(d_y), sums,
                                                                   gamma);
    if (r.g != nullptr) {
      const scalar_t scale_e = -sw * ty.a * sums.inv_sum;
      for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
        using V = decltype(tag);
        store(load(r.g + j, tag) * V(scale_e), r.g + j);
      });
      r.g[r.y] = sw * ty.a * ty.q;
    }
    return r.w * ty.loss;
  }
  // A target row: loss = w sum_c t_c l_c, d(loss)/du_k = w (t_k a_k - p_k A), A = sum_c t_c a_c.
  RowReduce<scalar_t, false> loss, a_sum;
  for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
    using V = decltype(tag);
    const V t = load(r.t + j, tag);
    const V d = u.difference(r, j, tag, m);
    const auto terms = cb::softmax_terms<V, OpsOf<scalar_t, V>, kFocal>(
        d, OpsOf<scalar_t, V>::exp(d), sums, V(gamma));
    loss.add(t * terms.loss);
    a_sum.add(t * terms.a);
  });
  if (r.g != nullptr) {
    const scalar_t a_total = a_sum.total();
    for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
      using V = decltype(tag);
      const V d = u.difference(r, j, tag, m);
      const auto terms = cb::softmax_terms<V, OpsOf<scalar_t, V>, kFocal>(
          d, load(r.g + j, tag), sums, V(gamma));
      store(V(sw) * (load(r.t + j, tag) * terms.a - terms.p * V(a_total)), r.g + j);
    });
  }
  return r.w * loss.total();
}

template <typename scalar_t>
void rows_cpu(const ClassBalancedLossArgs& a) {
  const int64_t n = a.logits.size(0), c = a.logits.size(1);
  const scalar_t* logits = a.logits.data_ptr<scalar_t>();
  const scalar_t* weights = a.class_weights.defined() ? a.class_weights.data_ptr<scalar_t>()
                                                      : nullptr;
  const scalar_t* margins = a.target_margins.defined() ? a.target_margins.data_ptr<scalar_t>()
                                                       : nullptr;
  SoftmaxLogits<scalar_t> softmax_logits{
      a.logit_offsets.defined() ? a.logit_offsets.data_ptr<scalar_t>() : nullptr, 0,
      static_cast<scalar_t>(a.scale)};
  const scalar_t gamma = static_cast<scalar_t>(a.gamma);
  scalar_t* row_loss = a.row_loss.data_ptr<scalar_t>();
  scalar_t* row_norm = a.row_norm.data_ptr<scalar_t>();
  scalar_t* grad = a.grad.defined() ? a.grad.data_ptr<scalar_t>() : nullptr;
  const scalar_t* soft = a.multi_hot ? a.target.data_ptr<scalar_t>() : nullptr;
  const int64_t* labels = a.multi_hot ? nullptr : a.target.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1));

  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    SoftmaxLogits<scalar_t> u = softmax_logits;
    for (int64_t i = begin; i < end; ++i) {
      RowView<scalar_t> r{logits + i * c, soft == nullptr ? nullptr : soft + i * c, -1, 0,
                          grad == nullptr ? nullptr : grad + i * c};
      scalar_t positives;
      if (r.t != nullptr) {  // a multi-hot sample weighs the sum of its positive classes' weights
        positives = 0;
        for (int64_t j = 0; j < c; ++j) {
          r.w += (weights != nullptr ? weights[j] : scalar_t(1)) * r.t[j];
          positives += r.t[j];
        }
      } else if (labels[i] == a.ignore_index) {
        row_loss[i] = 0;
        row_norm[i] = 0;
        if (r.g != nullptr) std::fill(r.g, r.g + c, scalar_t(0));
        continue;
      } else {
        r.y = labels[i];
        r.w = weights != nullptr ? weights[r.y] : scalar_t(1);
        positives = 1;
      }
      row_norm[i] = a.norm_by_weight ? r.w : positives;
      switch (a.loss_type) {
        case cb::kSoftmax:
          u.margin = margins != nullptr && r.t == nullptr ? margins[r.y] : scalar_t(0);
          row_loss[i] = a.gamma > 0 ? softmax_row<scalar_t, true>(r, c, u, gamma)
                                    : softmax_row<scalar_t, false>(r, c, u, gamma);
          break;
        case cb::kSigmoid: row_loss[i] = sigmoid_row<scalar_t, false>(r, c, gamma); break;
        default: row_loss[i] = sigmoid_row<scalar_t, true>(r, c, gamma); break;
      }
    }
  });
}

}  // namespace

void class_balanced_loss_rows(Cpu, const ClassBalancedLossArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.logits.scalar_type(), "class_balanced_loss_cpu",
                             [&] { rows_cpu<scalar_t>(args); });
}

}  // namespace fgo
