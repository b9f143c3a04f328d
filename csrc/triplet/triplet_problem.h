#pragma once
// What the triplet loss (triplet_loss.cpp) and mining (triplet_mine.cpp) share: checking a
// problem, building its candidates, and running a pass over its anchors.
#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <string>
#include <c10/util/string_view.h>

#include "triplet/triplet.h"
#include "triplet/triplet_args.h"

namespace fgo {

// Shapes, dtypes, devices and hyperparameters of a mining problem. Returns the parsed
// `negatives` rule; `op` names the entry point in messages.
triplet::Rule check_problem(const char* op, const at::Tensor& query,
                            const at::Tensor& query_labels, const at::Tensor& query_indices,
                            const at::Tensor& bank,
                            const at::Tensor& bank_labels, const at::Tensor& extra,
                            const at::Tensor& extra_labels, double margin,
                            c10::string_view negatives, double positive_fraction);

// The checks it is made of, for the loss's entry (which names its arguments its own way).
void check_rows(const char* name, const at::Tensor& t, int64_t dim);  // (n, dim)
void check_labels(const char* name, const at::Tensor& labels, int64_t n);  // int64 (n,)
void check_one_device(const at::Tensor& first, std::initializer_list<const at::Tensor*> others);
triplet::Rule check_hyperparameters(const char* op, double margin, c10::string_view negatives,
                                    double positive_fraction);

// The rows prepared (prepare_rows: the compute type, normalised when asked), the distances from
// every query to the bank, then the extras (CUDA: their inner products, made distances by the
// first pass), and the labels. query.is_same(bank) marks in-batch mining: the bank's rows are
// prepared once. The values (finite distances, query_indices in [-1, N)) are checked without
// a host sync on CUDA: by the first pass.
TripletCandidates build_candidates(const at::Tensor& query, const at::Tensor& query_labels,
                                   const at::Tensor& query_indices, const at::Tensor& bank,
                                   const at::Tensor& bank_labels, const at::Tensor& extra,
                                   const at::Tensor& extra_labels, double positive_fraction,
                                   bool squared, bool normalize);

// The device's part of build_candidates: c.dist from the prepared query rows y_query and
// candidate rows y_candidates (rows [first, ...) of c.prepared), with c.squared set.
void candidate_distances(Cpu, TripletCandidates& c, const at::Tensor& y_query,
                         const at::Tensor& y_candidates, int64_t first);
void candidate_distances(Cuda, TripletCandidates& c, const at::Tensor& y_query,
                         const at::Tensor& y_candidates, int64_t first);

// One pass of rows.pass over every anchor, on the candidates' device.
void run_rows(const TripletArgs& rows);

// The count pass: rows.counts (Q,) and rows.positive_counts (Q, max_positives), max_positives
// bounding every anchor's positives (the bank's largest class, or its size).
void count_rows(TripletArgs& rows, int64_t max_positives);

}  // namespace fgo
