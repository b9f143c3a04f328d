#include "triplet/triplet.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/device.h"
#include "triplet/triplet_anchor.h"

namespace fgo {
namespace {

void check_rows(const char* name, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.dim() == 2 && t.size(1) == dim, "triplet: ", name, " must be (n, ", dim,
              "), got shape ", t.sizes());
}

void check_labels(const char* name, const at::Tensor& labels, int64_t n) {
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n && labels.scalar_type() == at::kLong,
              "triplet: ", name, " must be int64 of shape (", n, ",), got ", labels.scalar_type(),
              " ", labels.sizes());
}

// Shapes, dtypes, devices and hyperparameters of a mining problem, then one host round trip
// for the values: the embeddings must be finite (a NaN would silently reorder the mining).
void check_problem(const at::Tensor& query, const at::Tensor& query_labels,
                   const at::Tensor& query_self, const at::Tensor& refs,
                   const at::Tensor& ref_labels, const at::Tensor& extra,
                   const at::Tensor& extra_labels, double margin, int64_t rule,
                   double positive_fraction) {
  TORCH_CHECK(query.dim() == 2, "triplet: query embeddings must be (Q, D), got shape ",
              query.sizes());
  TORCH_CHECK(query.scalar_type() == at::kFloat || query.scalar_type() == at::kDouble,
              "triplet: native embeddings must be float32 or float64, got ", query.scalar_type());
  const int64_t dim = query.size(1);
  check_rows("refs", refs, dim);
  check_rows("extra", extra, dim);
  TORCH_CHECK(refs.scalar_type() == query.scalar_type() &&
                  extra.scalar_type() == query.scalar_type(),
              "triplet: query, refs and extra must share a dtype, got ", query.scalar_type(), ", ",
              refs.scalar_type(), ", ", extra.scalar_type());
  check_labels("query_labels", query_labels, query.size(0));
  check_labels("query_self", query_self, query.size(0));
  check_labels("ref_labels", ref_labels, refs.size(0));
  check_labels("extra_labels", extra_labels, extra.size(0));
  for (const at::Tensor* t : {&query_labels, &query_self, &refs, &ref_labels, &extra,
                              &extra_labels}) {
    TORCH_CHECK(t->device() == query.device(), "triplet: every tensor must be on ",
                query.device(), ", got one on ", t->device());
  }
  TORCH_CHECK(std::isfinite(margin) && margin >= 0.0, "triplet: margin must be finite and >= 0, got ",
              margin);
  TORCH_CHECK(positive_fraction > 0.0 && positive_fraction <= 1.0,
              "triplet: positive_fraction must be in (0, 1], got ", positive_fraction);
  TORCH_CHECK(rule >= triplet::kViolating && rule <= triplet::kAll, "triplet: unknown rule code ",
              rule);
  const bool finite = at::stack({at::isfinite(query).all(), at::isfinite(refs).all(),
                                 at::isfinite(extra).all()}).all().item<bool>();
  TORCH_CHECK(finite, "triplet: embeddings must be finite (found NaN or Inf)");
}

// (Q, R) squared Euclidean distances by one GEMM, clamped at 0 against cancellation. Finite
// embeddings can still overflow (float32 without normalising): inf - inf is NaN there, which
// would leave the (distance, index) order undefined, so an overflowed distance is +inf.
at::Tensor squared_distances(const at::Tensor& q, const at::Tensor& r) {
  at::Tensor d = at::addmm(r.pow(2).sum(1).unsqueeze(0).expand({q.size(0), r.size(0)}), q, r.t(),
                           1, -2);
  d.add_(q.pow(2).sum(1, true)).clamp_min_(0);
  return d.masked_fill_(d.isnan(), std::numeric_limits<double>::infinity());
}

TripletCandidates build_candidates(const at::Tensor& query, const at::Tensor& query_labels,
                                   const at::Tensor& query_self, const at::Tensor& refs,
                                   const at::Tensor& ref_labels, const at::Tensor& extra,
                                   const at::Tensor& extra_labels, double positive_fraction,
                                   bool squared) {
  TripletCandidates c;
  c.dist = squared_distances(query.contiguous(), at::cat({refs, extra}));
  if (!squared) c.dist.sqrt_();
  c.query_labels = query_labels.contiguous();
  c.query_self = query_self.contiguous();
  c.labels = at::cat({ref_labels, extra_labels});
  c.num_labelled = refs.size(0);
  c.positive_fraction = positive_fraction;
  return c;
}

// Positives of the anchor with the most (an upper bound of its kept ones).
int64_t max_positives(const TripletCandidates& c) {
  if (c.query_labels.numel() == 0 || c.num_labelled == 0) return 0;
  const at::Tensor refs = c.labels.narrow(0, 0, c.num_labelled);
  return std::get<2>(at::_unique2(refs, /*sorted=*/false, /*return_inverse=*/false,
                                  /*return_counts=*/true)).max().item<int64_t>();
}

void run_rows(const TripletRows& rows) {
  if (rows.candidates.dist.size(0) == 0) return;
  on_device(rows.candidates.dist, [&](auto device) { triplet_rows(device, rows); });
}

// The count pass: rows.counts (Q,) and rows.positive_counts (Q, max positives).
void count_rows(TripletRows& rows) {
  const TripletCandidates& c = rows.candidates;
  const int64_t q = c.dist.size(0);
  rows.pass = triplet::kCount;
  rows.counts = at::zeros({q}, c.query_labels.options());
  rows.positive_counts = at::zeros({q, std::max<int64_t>(max_positives(c), 1)},
                                   rows.counts.options());
  run_rows(rows);
}

// splitmix64: a counter-based generator, so each anchor's draw depends only on (seed, anchor).
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) {  // uniform in [0, n)
    return static_cast<int64_t>((static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >> 64);
  }
};

// Ranks of up to k triplets per anchor, uniform without replacement (Floyd's algorithm),
// sorted; the anchor's triplets are [first_rank[a], first_rank[a] + counts[a]).
at::Tensor sample_per_anchor(const at::Tensor& counts, const at::Tensor& first_rank, int64_t k,
                             int64_t seed, int64_t anchor_offset) {
  const at::Tensor counts_cpu = counts.cpu(), first_cpu = first_rank.cpu();
  const int64_t* n = counts_cpu.data_ptr<int64_t>();
  const int64_t* first = first_cpu.data_ptr<int64_t>();
  std::vector<int64_t> ranks, chosen;
  for (int64_t a = 0; a < counts_cpu.numel(); ++a) {
    if (n[a] <= k) {
      for (int64_t i = 0; i < n[a]; ++i) ranks.push_back(first[a] + i);
      continue;
    }
    SplitMix64 rng{static_cast<uint64_t>(seed) ^
                   (static_cast<uint64_t>(a + anchor_offset) * 0xD1B54A32D192ED03ull)};
    chosen.clear();
    for (int64_t t = n[a] - k; t < n[a]; ++t) {
      const int64_t r = rng.below(t + 1);
      const auto at = std::lower_bound(chosen.begin(), chosen.end(), r);
      const int64_t pick = (at != chosen.end() && *at == r) ? t : r;  // t is above all chosen
      chosen.insert(std::lower_bound(chosen.begin(), chosen.end(), pick), pick);
    }
    for (const int64_t r : chosen) ranks.push_back(first[a] + r);
  }
  return at::tensor(ranks, at::kLong).to(counts.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> triplet_margin_loss_forward(
    const at::Tensor& emb, const at::Tensor& labels, const at::Tensor& extra,
    const at::Tensor& extra_labels, double margin, int64_t rule, double positive_fraction,
    int64_t reduction, bool squared, bool compute_grad) {
  TORCH_CHECK(emb.dim() == 2, "triplet_margin_loss: emb must be (B, D), got shape ", emb.sizes());
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "triplet_margin_loss: unknown reduction code ",
              reduction);
  const int64_t b = emb.size(0);
  const at::Tensor self = at::arange(b, labels.options());
  check_problem(emb, labels, self, emb, labels, extra, extra_labels, margin, rule,
                positive_fraction);
  const at::Tensor x = emb.contiguous(), e = extra.contiguous();

  TripletRows rows;
  rows.candidates = build_candidates(x, labels, self, x, labels, e, extra_labels,
                                     positive_fraction, squared);
  rows.rule = rule;
  rows.margin = margin;
  rows.pass = triplet::kLoss;
  rows.row_loss = at::zeros({b}, x.options().dtype(at::kDouble));
  rows.row_nonzero = at::zeros({b}, labels.options());
  rows.row_mined = at::zeros({b}, labels.options());
  rows.weights = at::zeros_like(rows.candidates.dist);
  run_rows(rows);

  // Fixed-order float64 reductions over anchors: deterministic whatever the thread count.
  const TripletCandidates& c = rows.candidates;
  at::Tensor norm = reduction == 0   ? rows.row_nonzero.sum()
                    : reduction == 1 ? rows.row_mined.sum()
                                     : at::ones({}, labels.options());
  norm = norm.to(at::kDouble).clamp_min(1.0);
  const at::Tensor loss = (rows.row_loss.sum() / norm).to(x.scalar_type());

  at::Tensor grad_emb = at::empty({0}, x.options()), grad_extra = at::empty({0}, x.options());
  if (compute_grad) {
    // loss_sum = sum_ij W_ij dist_ij; d(dist_ij) = 2 (x_i - y_j) for squared distances.
    at::Tensor w = rows.weights;
    if (!squared) {
      w = at::where(c.dist > 0, w / (2 * c.dist), at::zeros({}, w.options()));
    }
    const at::Tensor w_batch = w.narrow(1, 0, b), w_extra = w.narrow(1, b, e.size(0));
    const at::Tensor own = (w.sum(1) + w_batch.sum(0)).unsqueeze(1);
    grad_emb = 2 * (own * x - at::mm(w_batch + w_batch.t(), x) - at::mm(w_extra, e));
    grad_extra = 2 * (w_extra.sum(0).unsqueeze(1) * e - at::mm(w_extra.t(), x));
  }
  return {loss, grad_emb, grad_extra, norm.to(x.scalar_type())};
}

namespace {

// Checks a mining problem, builds its candidates and runs the count pass.
TripletRows counted_problem(const at::Tensor& query, const at::Tensor& query_labels,
                            const at::Tensor& query_self, const at::Tensor& refs,
                            const at::Tensor& ref_labels, const at::Tensor& extra,
                            const at::Tensor& extra_labels, double margin, int64_t rule,
                            double positive_fraction, bool squared) {
  check_problem(query, query_labels, query_self, refs, ref_labels, extra, extra_labels, margin,
                rule, positive_fraction);
  TripletRows rows;
  rows.candidates = build_candidates(query.contiguous(), query_labels, query_self,
                                     refs.contiguous(), ref_labels, extra.contiguous(),
                                     extra_labels, positive_fraction, squared);
  rows.rule = rule;
  rows.margin = margin;
  count_rows(rows);
  return rows;
}

}  // namespace

at::Tensor triplet_count(const at::Tensor& query, const at::Tensor& query_labels,
                         const at::Tensor& query_self, const at::Tensor& refs,
                         const at::Tensor& ref_labels, const at::Tensor& extra,
                         const at::Tensor& extra_labels, double margin, int64_t rule,
                         double positive_fraction, bool squared) {
  return counted_problem(query, query_labels, query_self, refs, ref_labels, extra, extra_labels,
                         margin, rule, positive_fraction, squared)
      .counts;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> triplet_mine(
    const at::Tensor& query, const at::Tensor& query_labels, const at::Tensor& query_self,
    const at::Tensor& refs, const at::Tensor& ref_labels, const at::Tensor& extra,
    const at::Tensor& extra_labels, double margin, int64_t rule, double positive_fraction,
    bool squared, const at::Tensor& ranks, int64_t per_anchor, int64_t seed,
    int64_t anchor_offset) {
  const bool given_ranks = ranks.numel() > 0;
  TORCH_CHECK(!(given_ranks && per_anchor >= 0),
              "triplet_mine: give either ranks or per_anchor, not both");
  TripletRows rows = counted_problem(query, query_labels, query_self, refs, ref_labels, extra,
                                     extra_labels, margin, rule, positive_fraction, squared);
  const at::Tensor counts = rows.counts;
  const at::Tensor ends = counts.cumsum(0);
  rows.first_rank = ends - counts;
  const int64_t total = counts.numel() > 0 ? ends[-1].item<int64_t>() : 0;
  const at::Tensor bounds = at::cat({rows.first_rank, at::full({1}, total, counts.options())});
  if (given_ranks) {
    TORCH_CHECK(ranks.dim() == 1 && ranks.scalar_type() == at::kLong &&
                    ranks.device() == query.device(),
                "triplet_mine: ranks must be a 1-D int64 tensor on ", query.device());
    const at::Tensor r = ranks.contiguous();
    const bool sorted = r.numel() < 2 || (r.narrow(0, 1, r.numel() - 1) >
                                          r.narrow(0, 0, r.numel() - 1)).all().item<bool>();
    TORCH_CHECK(sorted && r[0].item<int64_t>() >= 0 && r[-1].item<int64_t>() < total,
                "triplet_mine: ranks must be strictly increasing and in [0, ", total, ")");
    rows.ranks = r;
  } else if (per_anchor >= 0) {
    rows.ranks = sample_per_anchor(counts, rows.first_rank, per_anchor, seed, anchor_offset);
  }
  rows.slot_begin = rows.ranks.defined() ? at::searchsorted(rows.ranks, bounds) : bounds;
  const int64_t n_out = rows.ranks.defined() ? rows.ranks.numel() : total;
  rows.pass = triplet::kWrite;
  rows.anchor_offset = anchor_offset;
  rows.out_anchor = at::empty({n_out}, counts.options());
  rows.out_positive = at::empty({n_out}, counts.options());
  rows.out_negative = at::empty({n_out}, counts.options());
  run_rows(rows);
  return {rows.out_anchor, rows.out_positive, rows.out_negative};
}

}  // namespace fgo
