// CPU kernels of the class loss family: at::parallel_for over fixed blocks of rows, each row in
// SIMD vectors (at::vec::Vectorized; AVX2 + Sleef when the build enables it) and a scalar
// tail, one generic body serving both. The gradient of the reduced loss is written in the same
// passes as the loss (the divisor of 'mean' is known before, from the labels), and the loss is
// summed per block in float64 and over the blocks in order: the bits never depend on the
// threads. Half types are converted a row at a time into float32 row buffers.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "class_loss/class_loss_args.h"
#include "class_loss/class_loss_math.h"
#include "common/simd.h"

namespace fgo {
namespace {

template <typename scalar_t>
struct VecOps {
  using V = at::vec::Vectorized<scalar_t>;
  // float: at::vec's exp_u20 (within 20 ulp, ~2e-6 relative; torch's CPU attention and SiLU
  // kernels use it), faster than Sleef's, and 0 rather than a slow subnormal below
  // ln(FLT_MIN) (LDAM's scale 30 made subnormals common: 6.6 -> 3.1 ms at 512 x 8142);
  // double: Sleef's.
  static V exp(const V& x) {
    if constexpr (std::is_same_v<scalar_t, float>) return x.exp_u20();
    else return x.exp();
  }
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

// A row is walked as full vectors, then one element at a time (common/simd.h): f(j, V()), V
// the vector type, then the scalar type. Bodies are generic lambdas over V.
template <typename scalar_t, typename F>
void for_each_chunk(int64_t c, const F& f) {
  using Vec = at::vec::Vectorized<scalar_t>;
  simd::vectors_then_tail<Vec, scalar_t>(c, Vec::size(), f);
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
  scalar_t w;   // the row's weight
  scalar_t gw;  // the factor of its gradient: w over the divisor of 'mean'
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
    const auto terms = cls::sigmoid_terms<V, OpsOf<scalar_t, V>, kFocal>(
        load(r.z + j, tag), target_of(r, j, tag), V(gamma));
    loss.add(terms.loss);
    if (r.g != nullptr) store(terms.grad * V(r.gw), r.g + j);
  });
  return r.w * loss.total();
}

// The softmax family's logits v = z + b - margin onehot(y) and their scaled differences
// d = s (v - max v) from the row maximum (class_loss_math.h).
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
  const auto sums = cls::SoftmaxRowSums<scalar_t>::template from<ScalarOps>(below.total(),
                                                                          ties.total());
  const scalar_t sw = u.scale * r.gw;  // d(loss)/dz = s d(loss)/du
  if (r.t == nullptr) {
    // One target class: d(loss)/du_k = w (onehot_k a_y - p_k a_y).
    const scalar_t d_y = u.difference(r, r.y, scalar_t(), m);
    const auto ty = cls::softmax_terms<scalar_t, ScalarOps, kFocal>(d_y, std::exp(d_y), sums,
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
    const auto terms = cls::softmax_terms<V, OpsOf<scalar_t, V>, kFocal>(
        d, OpsOf<scalar_t, V>::exp(d), sums, V(gamma));
    loss.add(t * terms.loss);
    a_sum.add(t * terms.a);
  });
  if (r.g != nullptr) {
    const scalar_t a_total = a_sum.total();
    for_each_chunk<scalar_t>(c, [&](int64_t j, auto tag) {
      using V = decltype(tag);
      const V d = u.difference(r, j, tag, m);
      const auto terms = cls::softmax_terms<V, OpsOf<scalar_t, V>, kFocal>(
          d, load(r.g + j, tag), sums, V(gamma));
      store(V(sw) * (load(r.t + j, tag) * terms.a - terms.p * V(a_total)), r.g + j);
    });
  }
  return r.w * loss.total();
}

// How a family member treats a row: its label, weight and share of the 'mean' divisor.
template <typename acc_t>
struct PerClass {
  const acc_t* weights;  // or nullptr
  const acc_t* offsets;  // or nullptr
  const acc_t* margins;  // or nullptr
};

// The divisor of 'mean' / 'weighted_mean' (1 for 'sum' and 'none'), after checking the
// target's values; every sum in float64 and in a fixed order.
template <typename acc_t>
double divisor(const ClassLossArgs& a, const PerClass<acc_t>& pc, int64_t block) {
  const int64_t n = a.logits.size(0), c = a.logits.size(1);
  const bool by_weight = a.reduction == cls::kWeightedMean;
  double norm = 0;
  if (!a.multi_hot) {
    const int64_t* labels = a.target.data_ptr<int64_t>();
    int64_t bad = 0, low = 0, high = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = labels[i];
      if (y == a.ignore_index) continue;
      if (y < 0 || y >= c) {
        low = bad ? std::min(low, y) : y;
        high = bad ? std::max(high, y) : y;
        ++bad;
        continue;
      }
      norm += by_weight && pc.weights != nullptr ? double(pc.weights[y]) : 1.0;
    }
    TORCH_CHECK_VALUE(bad == 0, "class_loss: target class indices must be in [0, ", c,
                      ") (the logits' C) or equal ignore_index=", a.ignore_index, ", got ", bad,
                      " outside, min ", low, ", max ", high);
  } else {
    // Per block of rows: its divisor share, and whether a target value or row sum is out.
    const acc_t* t = a.target.data_ptr<acc_t>();
    const int64_t blocks = (n + block - 1) / block;
    std::vector<double> share(blocks, 0.0);
    std::vector<char> out_of_range(blocks, 0), bad_sum(blocks, 0);
    const bool softmax = a.loss_type == cls::kSoftmax;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i) {
          double mass = 0, weight = 0;
          for (int64_t j = 0; j < c; ++j) {
            const acc_t v = t[i * c + j];
            if (!(v >= 0 && v <= 1)) out_of_range[b] = 1;  // NaN too
            mass += double(v);
            weight += double(v) * (pc.weights != nullptr ? double(pc.weights[j]) : 1.0);
          }
          if (softmax && !(std::abs(mass - 1) <= cls::kSoftTargetSumTolerance)) bad_sum[b] = 1;
          share[b] += by_weight ? weight : mass;
        }
      }
    });
    for (int64_t b = 0; b < blocks; ++b) {
      TORCH_CHECK_VALUE(!out_of_range[b], "class_loss: ", softmax ? "soft" : "multi-hot",
                        " target values must be in [0, 1] (and not NaN), got one outside in "
                        "rows ", b * block, "..", std::min(n, (b + 1) * block) - 1);
      TORCH_CHECK_VALUE(!bad_sum[b], "class_loss: soft targets of a softmax loss must have "
                        "every row summing to 1 (within ", cls::kSoftTargetSumTolerance,
                        "), got a row that does not in rows ", b * block, "..",
                        std::min(n, (b + 1) * block) - 1);
      norm += share[b];
    }
  }
  if (a.reduction == cls::kMean) return std::max(norm, 1.0);
  if (a.reduction == cls::kWeightedMean) return norm > 0 ? norm : 1.0;
  return 1.0;
}

// Per-class values: weights and margins finite and >= 0, offsets finite.
template <typename acc_t>
void check_per_class(const PerClass<acc_t>& pc, int64_t c) {
  for (int64_t j = 0; j < c; ++j) {
    if (pc.weights != nullptr) {
      TORCH_CHECK_VALUE(std::isfinite(pc.weights[j]) && pc.weights[j] >= 0,
                        "class_loss: class_weights must be finite and >= 0, got ",
                        pc.weights[j], " for class ", j);
    }
    if (pc.offsets != nullptr) {
      TORCH_CHECK_VALUE(std::isfinite(pc.offsets[j]),
                        "class_loss: logit_offsets must be finite, got ", pc.offsets[j],
                        " for class ", j);
    }
    if (pc.margins != nullptr) {
      TORCH_CHECK_VALUE(std::isfinite(pc.margins[j]) && pc.margins[j] >= 0,
                        "class_loss: target_margins must be finite and >= 0, got ",
                        pc.margins[j], " for class ", j);
    }
  }
}

// values into a contiguous tensor of one of the four floating dtypes.
void store(const at::Tensor& out, const std::vector<double>& values) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "store", [&] {
    scalar_t* data = out.data_ptr<scalar_t>();
    for (size_t i = 0; i < values.size(); ++i) data[i] = static_cast<scalar_t>(values[i]);
  });
}

template <typename acc_t>
const acc_t* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<acc_t>() : nullptr;
}

// scalar_t: the logits' storage type; acc_t: the compute type (float for half types).
template <typename scalar_t, typename acc_t>
void rows_cpu(const ClassLossArgs& a) {
  constexpr bool kConverted = !std::is_same_v<scalar_t, acc_t>;
  const int64_t n = a.logits.size(0), c = a.logits.size(1);
  const PerClass<acc_t> pc{data_or_null<acc_t>(a.class_weights),
                           data_or_null<acc_t>(a.logit_offsets),
                           data_or_null<acc_t>(a.target_margins)};
  check_per_class(pc, c);
  // Rows per block: a fixed split (the shapes alone decide it), about 32K logits a block.
  const int64_t block = std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1));
  const double norm = divisor(a, pc, block);
  const bool per_row = a.reduction == cls::kNone;
  const acc_t inv_norm = static_cast<acc_t>(1.0 / norm);
  const SoftmaxLogits<acc_t> softmax_logits{pc.offsets, 0, static_cast<acc_t>(a.scale)};
  const acc_t gamma = static_cast<acc_t>(a.gamma);
  const scalar_t* logits = a.logits.data_ptr<scalar_t>();
  scalar_t* grad = a.grad.defined() ? a.grad.data_ptr<scalar_t>() : nullptr;
  const acc_t* soft = a.multi_hot ? a.target.data_ptr<acc_t>() : nullptr;
  const int64_t* labels = a.multi_hot ? nullptr : a.target.data_ptr<int64_t>();
  const int64_t blocks = (n + block - 1) / block;
  std::vector<double> block_loss(blocks, 0.0);
  std::vector<double> row_loss(per_row ? n : 0);

  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    SoftmaxLogits<acc_t> u = softmax_logits;
    std::vector<acc_t> z_row(kConverted ? c : 0), g_row(kConverted && grad ? c : 0);
    for (int64_t b = begin; b < end; ++b) {
      double total = 0;
      for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i) {
        const acc_t* z;
        if constexpr (kConverted) {
          for (int64_t j = 0; j < c; ++j) z_row[j] = static_cast<acc_t>(logits[i * c + j]);
          z = z_row.data();
        } else {
          z = logits + i * c;
        }
        acc_t* g = nullptr;
        if (grad != nullptr) {
          if constexpr (kConverted) g = g_row.data();
          else g = grad + i * c;
        }
        RowView<acc_t> r{z, soft == nullptr ? nullptr : soft + i * c, -1, 0, 0, g};
        if (r.t != nullptr) {  // a multi-hot sample weighs the sum of its positive classes'
          for (int64_t j = 0; j < c; ++j) {
            r.w += (pc.weights != nullptr ? pc.weights[j] : acc_t(1)) * r.t[j];
          }
        } else if (labels[i] == a.ignore_index) {
          if (grad != nullptr) std::fill(grad + i * c, grad + (i + 1) * c, scalar_t(0));
          if (per_row) row_loss[i] = 0;
          continue;
        } else {
          r.y = labels[i];
          r.w = pc.weights != nullptr ? pc.weights[r.y] : acc_t(1);
        }
        r.gw = r.w * inv_norm;
        acc_t loss;
        switch (a.loss_type) {
          case cls::kSoftmax:
            u.margin = pc.margins != nullptr && r.t == nullptr ? pc.margins[r.y] : acc_t(0);
            loss = a.gamma > 0 ? softmax_row<acc_t, true>(r, c, u, gamma)
                               : softmax_row<acc_t, false>(r, c, u, gamma);
            break;
          case cls::kSigmoid: loss = sigmoid_row<acc_t, false>(r, c, gamma); break;
          default: loss = sigmoid_row<acc_t, true>(r, c, gamma); break;
        }
        if constexpr (kConverted) {
          if (grad != nullptr) {
            for (int64_t j = 0; j < c; ++j) grad[i * c + j] = static_cast<scalar_t>(g[j]);
          }
        }
        if (per_row) row_loss[i] = double(loss);
        total += double(loss);
      }
      block_loss[b] = total;
    }
  });

  if (per_row) {
    store(a.loss, row_loss);
  } else {
    double total = 0;
    for (const double partial : block_loss) total += partial;
    store(a.loss, std::vector<double>{total / norm});
  }
  store(a.norm, std::vector<double>{1.0});  // the divisor is folded into grad
}

}  // namespace

void class_loss_rows(Cpu, const ClassLossArgs& args) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.logits.scalar_type(),
                                  "class_loss_cpu", [&] {
    rows_cpu<scalar_t, at::opmath_type<scalar_t>>(args);
  });
}

}  // namespace fgo
