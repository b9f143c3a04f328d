// Every native entry point of finegrained_ops, bound for module.cpp: the ops, derived from
// their schemas (bind_op), and a few test hooks. The library calls the ops as torch.ops; these
// bindings are the same ops reached from the extension module.
#include "bindings.h"

#include <torch/csrc/jit/python/pybind_utils.h>
#include <torch/csrc/jit/runtime/operator.h>
#include <torch/extension.h>

#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "build_info/build_info.h"
#include "class_loss/class_loss.h"
#include "common/real_fft.h"
#include "triplet/triplet.h"

namespace fgo {
namespace {

// m.<name>(...) calls the op finegrained_ops::<name> through the dispatcher, as torch.ops
// does: its arguments, their names and defaults are the op's schema (declared once, in
// <op>_op.cpp), which the docstring shows. The call releases the GIL while the op runs.
void bind_op(py::module_& m, const char* name, const char* doc) {
  const auto symbol = c10::Symbol::fromQualString(std::string("finegrained_ops::") + name);
  const std::vector<std::shared_ptr<torch::jit::Operator>>& ops =
      torch::jit::getAllOperatorsFor(symbol);
  TORCH_CHECK(ops.size() == 1, "bindings: expected one op finegrained_ops::", name, ", found ",
              ops.size());
  std::ostringstream signature;
  signature << doc << "\n\n" << ops[0]->schema();
  m.def(name, [ops](const py::args& args, const py::kwargs& kwargs) {
    return torch::jit::invokeOperatorFromPython(ops, args, kwargs);
  }, py::doc(strdup(signature.str().c_str())));  // the docstring lives as long as the module
}

}  // namespace

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

  bind_op(m, "class_balanced_weights",
          "(C,) float64 class weights (1 - beta) / (1 - beta^n), normalised to sum to C.");
  bind_op(m, "class_loss",
          "The class loss family's fused loss: (loss, grad, norm), d(loss)/d(logits) = grad / "
          "norm.");
  bind_op(m, "scale_gradient",
          "grad * grad_loss / norm (grad_loss 0-dim or per row): the losses' backward pass.");
  bind_op(m, "sketch_table",
          "The count sketches' hashes as the kernel-pooling kernels read them: (p, 2C + dim + 1) "
          "int64.");
  bind_op(m, "kernel_pooling",
          "Kernel pooling (alpha given) or the sketch blocks alone: (out, blocks), both (N, D).");
  bind_op(m, "kernel_pooling_backward",
          "Gradients of kernel_pooling w.r.t. x and alpha, given the gradient of its output.");
  bind_op(m, "sqrt_normalize", "Signed square root, then L2 normalisation, of each row of y.");
  bind_op(m, "sqrt_normalize_backward",
          "d(loss)/dy of sqrt_normalize from the gradient of its output.");
  bind_op(m, "triplet_margin_loss",
          "Fused in-batch triplet mining + margin loss: (loss, grad_embeddings, "
          "grad_extra_negatives, norm), d(loss)/d(embeddings) = grad_embeddings / norm, w.r.t. "
          "the raw embeddings.");
  bind_op(m, "triplet_count", "Number of triplets each anchor mines: (Q,) int64.");
  bind_op(m, "triplet_mine",
          "Mined triplets (anchor, positive, negative): all, max_triplets of them, or per_anchor "
          "per anchor, drawn from seed.");

  // Test hooks: not ops.
  m.def("_real_fft", &fgo::fft::real_fft_rows,
        "The CPU kernels' real FFT (common/real_fft.h), for the tests: rfft of (R, n) rows, or "
        "(inverse) irfft of (R, n / 2 + 1) complex rows.",
        py::arg("x"), py::arg("inverse"), py::arg("n"), py::call_guard<py::gil_scoped_release>());

  // The names each mode argument accepts: the one list Python checks against.
  py::dict choices;
  choices["class_loss.loss_type"] = choice_names(kClassLossTypes);
  choices["class_loss.reduction"] = choice_names(kClassLossReductions);
  choices["triplet.negatives"] = choice_names(kTripletNegatives);
  choices["triplet.reduction"] = choice_names(kTripletReductions);
  m.attr("choices") = choices;
}

}  // namespace fgo
