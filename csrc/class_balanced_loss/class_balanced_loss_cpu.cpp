// CPU kernels of the class-balanced loss: at::parallel_for over rows, each row in SIMD
// vectors (at::vec::Vectorized; AVX2 + Sleef when the build enables it). One pass over the
// logits writes the gradient; the only temporaries are per-row scalars.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>

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
  static V select_nonneg(const V& z, const V& a, const V& b) { return V::blendv(b, a, z >= V(0)); }
};

// Sum of the first `lanes` lanes of v, in lane order.
template <typename scalar_t>
scalar_t sum_lanes(const at::vec::Vectorized<scalar_t>& v, int64_t lanes) {
  scalar_t buf[at::vec::Vectorized<scalar_t>::size()];
  v.store(buf);
  scalar_t s = 0;
  for (int64_t i = 0; i < lanes; ++i) s += buf[i];
  return s;
}

// Sigmoid / focal terms of one row, weighted by w. `t` is the multi-hot target row, or
// nullptr for a class-index target `y` (t is then one-hot at y, built for y's vector only).
// Writes w * dloss/dz into g when g is non-null; returns the weighted row loss.
template <typename scalar_t, bool kFocal>
scalar_t sigmoid_row(const scalar_t* z, const scalar_t* t, int64_t y, int64_t c, scalar_t w,
                     scalar_t gamma, scalar_t* g) {
  using Vec = at::vec::Vectorized<scalar_t>;
  using Ops = VecOps<scalar_t>;
  constexpr int64_t kLanes = Vec::size();
  const Vec wv(w), gv(gamma), zero(0);
  Vec acc(0);
  scalar_t tail_sum = 0;
  for (int64_t j = 0; j < c; j += kLanes) {
    const int64_t lanes = std::min(kLanes, c - j);
    const Vec zv = lanes == kLanes ? Vec::loadu(z + j) : Vec::loadu(z + j, lanes);
    Vec tv = zero;
    if (t != nullptr) {
      tv = lanes == kLanes ? Vec::loadu(t + j) : Vec::loadu(t + j, lanes);
    } else if (y >= j && y < j + lanes) {
      // The true class's own term, not a t = 0 term corrected afterwards: that correction
      // (subtracting softplus(z_y) from the row sum) cancels catastrophically for large z_y.
      scalar_t one_hot[kLanes] = {};
      one_hot[y - j] = scalar_t(1);
      tv = Vec::loadu(one_hot);
    }
    const auto r = cb::sigmoid_terms<Vec, Ops, kFocal>(zv, tv, gv);
    if (lanes == kLanes) {
      acc = acc + r.loss;
      if (g != nullptr) (r.grad * wv).store(g + j);
    } else {
      tail_sum = sum_lanes(r.loss, lanes);
      if (g != nullptr) (r.grad * wv).store(g + j, lanes);
    }
  }
  return w * (sum_lanes(acc, kLanes) + tail_sum);
}

// Softmax cross-entropy of one row with true class y, weighted by w. The gradient buffer
// holds exp(z - max) between the two passes, so each logit costs one exp.
template <typename scalar_t>
scalar_t softmax_row(const scalar_t* z, int64_t y, int64_t c, scalar_t w, scalar_t* g) {
  using Vec = at::vec::Vectorized<scalar_t>;
  constexpr int64_t kLanes = Vec::size();
  const scalar_t zmax = at::vec::reduce_all<scalar_t>(
      [](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }, z, c);
  const Vec mv(zmax);
  Vec acc(0);
  scalar_t tail_sum = 0;
  for (int64_t j = 0; j < c; j += kLanes) {
    const int64_t lanes = std::min(kLanes, c - j);
    const Vec e = ((lanes == kLanes ? Vec::loadu(z + j) : Vec::loadu(z + j, lanes)) - mv).exp();
    if (lanes == kLanes) {
      acc = acc + e;
      if (g != nullptr) e.store(g + j);
    } else {
      tail_sum = sum_lanes(e, lanes);
      if (g != nullptr) e.store(g + j, lanes);
    }
  }
  const scalar_t sum = sum_lanes(acc, kLanes) + tail_sum;
  if (g != nullptr) {
    const Vec scale(w / sum);
    for (int64_t j = 0; j < c; j += kLanes) {
      const int64_t lanes = std::min(kLanes, c - j);
      if (lanes == kLanes) (Vec::loadu(g + j) * scale).store(g + j);
      else (Vec::loadu(g + j, lanes) * scale).store(g + j, lanes);
    }
    g[y] -= w;
  }
  return w * (zmax + std::log(sum) - z[y]);
}

template <typename scalar_t>
void rows_cpu(const ClassBalancedLossArgs& a) {
  const int64_t n = a.logits.size(0), c = a.logits.size(1);
  const scalar_t* logits = a.logits.data_ptr<scalar_t>();
  const scalar_t* weights = a.class_weights.data_ptr<scalar_t>();
  const scalar_t gamma = static_cast<scalar_t>(a.gamma);
  scalar_t* row_loss = a.row_loss.data_ptr<scalar_t>();
  scalar_t* row_pos = a.row_positives.data_ptr<scalar_t>();
  scalar_t* grad = a.grad.defined() ? a.grad.data_ptr<scalar_t>() : nullptr;
  const scalar_t* soft = a.multi_hot ? a.target.data_ptr<scalar_t>() : nullptr;
  const int64_t* labels = a.multi_hot ? nullptr : a.target.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(c, 1));

  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* z = logits + i * c;
      scalar_t* g = grad == nullptr ? nullptr : grad + i * c;
      const scalar_t* t = soft == nullptr ? nullptr : soft + i * c;
      int64_t y = -1;
      scalar_t w, positives;
      if (t != nullptr) {  // a multi-hot sample weighs the sum of its positive classes' weights
        w = 0;
        positives = 0;
        for (int64_t j = 0; j < c; ++j) {
          w += weights[j] * t[j];
          positives += t[j];
        }
      } else if (labels[i] == a.ignore_index) {
        row_loss[i] = 0;
        row_pos[i] = 0;
        if (g != nullptr) std::fill(g, g + c, scalar_t(0));
        continue;
      } else {
        y = labels[i];
        w = weights[y];
        positives = 1;
      }
      row_pos[i] = positives;
      switch (a.loss_type) {
        case cb::kSoftmax: row_loss[i] = softmax_row(z, y, c, w, g); break;
        case cb::kSigmoid: row_loss[i] = sigmoid_row<scalar_t, false>(z, t, y, c, w, gamma, g); break;
        default: row_loss[i] = sigmoid_row<scalar_t, true>(z, t, y, c, w, gamma, g); break;
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
