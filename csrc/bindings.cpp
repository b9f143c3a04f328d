// Every native entry point of finegrained_ops, bound for module.cpp (and for the CUDA
// emulation's module, tests/cuda_emulation). The library calls them as torch.library ops
// (<op>/<op>_op.cpp, with their autograd); these bindings are the direct calls the tests and
// the emulation make.
#include "bindings.h"

#include <torch/extension.h>

#include "build_info/build_info.h"
#include "class_loss/class_loss.h"
#include "common/real_fft.h"
#include "kernel_pooling/kernel_pooling.h"
#include "kernel_pooling/kernel_pooling_args.h"
#include "precomputed_gradient/scale_gradient.h"
#include "sqrt_normalize/sqrt_normalize.h"
#include "triplet/triplet.h"

namespace fgo {

// The op entry points release the GIL: they touch no Python object, so Python threads (data
// loading, a second model) run while they compute.
void bind_ops(pybind11::module_& m) {
  m.def("build_info", [] {
    const fgo::BuildInfo info = fgo::build_info();
    py::dict d;
    d["version"] = info.version;
    d["torch_version"] = info.torch_version;
    d["with_cuda"] = info.with_cuda;
    d["cuda_version"] = info.cuda_version;
    d["cuda_arch_list"] = info.cuda_arch_list;
    d["cpu_capability"] = info.cpu_capability;
    d["with_openmp"] = info.with_openmp;
    d["num_threads"] = info.num_threads;
    return d;
  }, "Facts fixed when the extension was compiled (versions, CUDA, OpenMP) as a dict.");

  m.def("class_balanced_weights", &fgo::class_balanced_weights,
        "(C,) float64 class weights (1 - beta) / (1 - beta^n), normalised to sum to C.",
        py::arg("samples_per_class"), py::arg("beta"), py::call_guard<py::gil_scoped_release>());
  m.def("class_loss", &fgo::class_loss,
        "The class loss family's fused loss: (loss, grad, norm), d(loss)/d(logits) = grad / "
        "norm.",
        py::arg("logits"), py::arg("target"), py::arg("class_weights"), py::arg("logit_offsets"),
        py::arg("target_margins"), py::arg("scale"), py::arg("gamma"),
        py::arg("loss_type"), py::arg("reduction"), py::arg("ignore_index"),
        py::arg("compute_grad"), py::arg("loss_dtype") = py::none(),
        py::call_guard<py::gil_scoped_release>());

  m.def("scale_gradient", &fgo::scale_gradient,
        "grad * grad_loss / norm (grad_loss 0-dim or per row): the losses' backward pass.",
        py::arg("grad"), py::arg("grad_loss"), py::arg("norm"),
        py::call_guard<py::gil_scoped_release>());

  m.def("kernel_pooling_forward", &fgo::kernel_pooling_forward,
        "Pooled tensor-sketch blocks of orders 2..p of kernel pooling: (N, p-1, dim).",
        py::arg("x"), py::arg("hash_index"), py::arg("hash_sign"), py::arg("dim"),
        py::call_guard<py::gil_scoped_release>());
  m.def("kernel_pooling_backward", &fgo::kernel_pooling_backward,
        "Gradient of kernel_pooling_forward w.r.t. x, given the gradient of its output.",
        py::arg("grad"), py::arg("x"), py::arg("hash_index"), py::arg("hash_sign"),
        py::arg("dim"),
        py::call_guard<py::gil_scoped_release>());
  m.def("_kernel_pooling_bin_lookup", [](const at::Tensor& hash_index, const at::Tensor& hash_sign,
                                         int64_t dim) {
    const fgo::BinLookup bins = fgo::bin_lookup(hash_index, hash_sign, dim);
    return std::make_tuple(bins.start, bins.channel, bins.sign);
  }, "The hashes grouped by bin as the CUDA sketch kernel reads them: (start, channel, sign).",
        py::arg("hash_index"), py::arg("hash_sign"), py::arg("dim"),
        py::call_guard<py::gil_scoped_release>());

  m.def("_real_fft", &fgo::fft::real_fft_rows,
        "The CPU kernels' real FFT (common/real_fft.h), for the tests: rfft of (R, n) rows, or "
        "(inverse) irfft of (R, n / 2 + 1) complex rows.",
        py::arg("x"), py::arg("inverse"), py::arg("n"), py::call_guard<py::gil_scoped_release>());

  m.def("sqrt_normalize", &fgo::sqrt_normalize,
        "Signed square root, then L2 normalisation, of each row of y (N, D).", py::arg("y"),
        py::arg("eps"), py::call_guard<py::gil_scoped_release>());
  m.def("sqrt_normalize_backward", &fgo::sqrt_normalize_backward,
        "d(loss)/dy of sqrt_normalize from the gradient of its output.", py::arg("grad"),
        py::arg("y"), py::arg("z"), py::arg("eps"), py::call_guard<py::gil_scoped_release>());

  m.def("triplet_margin_loss", &fgo::triplet_margin_loss,
        "Fused in-batch triplet mining + margin loss: (loss, grad_emb, grad_extra_negatives, "
        "norm), d(loss)/d(emb) = grad_emb / norm, w.r.t. the raw embeddings.",
        py::arg("emb"), py::arg("labels"), py::arg("extra_negatives"),
        py::arg("extra_negative_labels"), py::arg("margin"), py::arg("negatives"),
        py::arg("positive_fraction"), py::arg("reduction"), py::arg("squared"),
        py::arg("normalize"), py::arg("compute_grad"),
        py::call_guard<py::gil_scoped_release>());
  m.def("triplet_count", &fgo::triplet_count, "Number of triplets each anchor mines: (Q,) int64.",
        py::arg("query_emb"), py::arg("query_labels"), py::arg("query_indices"),
        py::arg("bank_emb"), py::arg("bank_labels"), py::arg("extra_negatives"),
        py::arg("extra_negative_labels"), py::arg("margin"), py::arg("negatives"),
        py::arg("positive_fraction"), py::arg("squared"), py::arg("normalize"),
        py::arg("max_positives"), py::call_guard<py::gil_scoped_release>());
  m.def("triplet_mine", &fgo::triplet_mine,
        "Mined triplets (anchor, positive, negative): all, max_triplets of them, or per_anchor "
        "per anchor, drawn from seed.",
        py::arg("query_emb"), py::arg("query_labels"), py::arg("query_indices"),
        py::arg("bank_emb"), py::arg("bank_labels"), py::arg("extra_negatives"),
        py::arg("extra_negative_labels"), py::arg("margin"), py::arg("negatives"),
        py::arg("positive_fraction"), py::arg("squared"), py::arg("normalize"),
        py::arg("max_positives"), py::arg("max_triplets"),
        py::arg("per_anchor"), py::arg("seed"), py::arg("anchor_offset"),
        py::call_guard<py::gil_scoped_release>());

  // The names each mode argument accepts: the one list Python checks against.
  py::dict choices;
  choices["class_loss.loss_type"] = choice_names(kClassLossTypes);
  choices["class_loss.reduction"] = choice_names(kClassLossReductions);
  choices["triplet.negatives"] = choice_names(kTripletNegatives);
  choices["triplet.reduction"] = choice_names(kTripletReductions);
  m.attr("choices") = choices;
}

}  // namespace fgo
