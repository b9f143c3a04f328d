"""The registry of ops: each public op once, with a fixed example call, and every cross-cutting
suite enrols the ops from here (docs/architecture.md, "The registry").

An op is a public function a training or evaluation step calls on tensors: the losses, the
poolings, the miners. Adding an entry enrols it in
  - test_fuzz.py::test_registered_op: every dtype and memory layout, against the reference;
  - test_fuzz.py::test_registered_module: its nn module gives the function's bits;
  - test_thread_invariance.py::test_registered_op: 1, 2 and 4 threads;
  - test_cuda_emulation.py::test_registered_op (native ops): the CUDA kernels against the CPU;
  - `make sanitize` (tools/sanitize.py runs those and the op's own test module);
  - benchmarks/long_run.py (a leak shows as resident growth), benchmarks/host_overhead.py
    (against `baseline`, the PyTorch call a user would write instead) and, through `bench`,
    the suite (`python -m benchmarks`).
test_fuzz.py::test_every_public_op_is_registered fails for a public op missing here.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F

import finegrained_ops as fo
from finegrained_ops import reference


@dataclasses.dataclass
class Example:
    """One call: op(*args, **kwargs). `inputs` name the floating tensors the suites vary (dtype,
    layout) and differentiate: positions in args, or keys of kwargs."""
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    inputs: tuple[Union[int, str], ...] = (0,)

    def tensors(self) -> list[torch.Tensor]:
        return [self.args[k] if isinstance(k, int) else self.kwargs[k] for k in self.inputs]

    def with_inputs(self, change: Callable[[torch.Tensor], torch.Tensor]) -> "Example":
        """This call with change(t) for every input t."""
        args, kwargs = list(self.args), dict(self.kwargs)
        for k in self.inputs:
            if isinstance(k, int):
                args[k] = change(args[k])
            else:
                kwargs[k] = change(kwargs[k])
        return Example(tuple(args), kwargs, self.inputs)

    def in_float64(self) -> "Example":
        """Every floating tensor, inputs or not (hash signs, alphas), in float64."""
        def cast(t):
            return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        return Example(tuple(cast(a) for a in self.args),
                       {k: cast(v) for k, v in self.kwargs.items()}, self.inputs)


@dataclasses.dataclass(frozen=True)
class Op:
    """name: where the public function lives ('kernel_pooling', 'retrieval.gem').
    example(rows, dtype, device): a fixed call with about `rows` samples, its inputs in dtype.
    native: C++/CUDA kernels (the emulation and the sanitizers); else pure PyTorch
    (docs/architecture.md, "An op without a native kernel").
    reference: called like the op on float64 copies (None: the same-named function in
    finegrained_ops.reference; False: no separate spec, the op is the composition itself).
    thread_invariant: which results are bitwise independent of the thread count, 'forward'
    and/or 'backward' (docs/semantics.md §1); the others must still be close.
    modules: the nn modules computing the op; module(example) -> a call of the first on the
    example's inputs that gives the op's value.
    tests: the op's test module. bench: its benchmark in the suite (benchmarks/bench_<bench>.py).
    baseline(example): the PyTorch call a user would write instead (host_overhead)."""
    name: str
    example: Callable[[int, torch.dtype, Any], Example]
    tests: str
    native: bool = True
    reference: Any = None
    thread_invariant: tuple[str, ...] = ("forward", "backward")
    modules: tuple[str, ...] = ()
    module: Optional[Callable[[Example], Callable[[], Any]]] = None
    bench: Optional[str] = None
    baseline: Optional[Callable[[Example], Callable[[], Any]]] = None

    @property
    def fn(self) -> Callable:
        module, _, name = ("." + self.name).rpartition(".")
        return getattr(importlib.import_module("finegrained_ops" + module), name)

    @property
    def spec(self) -> Optional[Callable]:
        if self.reference is False:
            return None
        return self.reference or getattr(reference, self.name.rpartition(".")[2])

    def __call__(self, example: Example) -> Any:
        return self.fn(*example.args, **example.kwargs)


def _generator():
    return torch.Generator().manual_seed(0)


def _normal(g, *shape, dtype, device, scale=1.0):
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).to(device)


# ---------------------------------------------------------------------------------------------
# Examples

def _maps_as_locations(rows, dtype, device, channels=8, locations=9):
    return _normal(_generator(), rows, locations, channels, dtype=dtype, device=device)


def _kernel_pooling(rows, dtype, device):
    hash_index, hash_sign = fo.draw_hashes(8, 16, 3, seed=1)
    return Example((_maps_as_locations(rows, dtype, device), hash_index.to(device),
                    hash_sign.to(dtype).to(device), torch.ones(4, dtype=dtype, device=device),
                    16))


def _compact_bilinear(rows, dtype, device):
    hash_index, hash_sign = fo.draw_hashes(8, 16, 2, seed=0)  # CompactBilinearPooling(8, 16)'s
    return Example((_maps_as_locations(rows, dtype, device, locations=16), hash_index.to(device),
                    hash_sign.to(dtype).to(device), 16))


def _two_input_compact_bilinear(rows, dtype, device):
    hash_index, hash_sign = fo.draw_two_input_hashes(8, 5, 16, seed=0)
    g = _generator()
    return Example((_normal(g, rows, 9, 8, dtype=dtype, device=device), hash_index.to(device),
                    hash_sign.to(dtype).to(device), 16),
                   {"y": _normal(g, rows, 9, 5, dtype=dtype, device=device)}, inputs=(0, "y"))


CLASSES = 10


def _class_loss(rows, dtype, device, counts=True, cosines=False):
    """(rows, 10) logits (cosines in (-1, 1) for LDAM), a target, class counts 10 to 100."""
    logits = _normal(_generator(), rows, CLASSES, dtype=torch.float64, device=device, scale=3.0)
    logits = (logits.tanh() if cosines else logits).to(dtype)
    target = (torch.arange(rows) % CLASSES).to(device)
    counts_ = (torch.arange(1, CLASSES + 1) * 10).to(device)
    return Example((logits, target, counts_) if counts else (logits, target))


def _embeddings(rows, dtype, device):
    """(rows, 4) embeddings, rows // 2 classes of two (one class below four rows)."""
    embeddings = _normal(_generator(), rows, 4, dtype=dtype, device=device)
    return embeddings, (torch.arange(rows) % max(1, rows // 2)).to(device)


def _triplet(rows, dtype, device):
    return Example(_embeddings(rows, dtype, device))


def _bank(rows, dtype, device):
    query, query_labels = _embeddings(max(1, rows // 2), dtype, device)
    bank, bank_labels = _embeddings(4 * rows, dtype, device)
    return Example((query, query_labels, bank, bank_labels),
                   {"per_anchor": None, "chunk_size": 7}, inputs=(0, 2))


def _feature_maps(rows, dtype, device):
    return Example((_normal(_generator(), rows, 6, 3, 4, dtype=dtype, device=device).abs(),))


# ---------------------------------------------------------------------------------------------
# References whose call differs from the op's

def _reference_compact_bilinear(x, hash_index, hash_sign, dim, y=None):
    if y is None:
        return reference.compact_bilinear_pooling(x, x, (hash_index[0], hash_sign[0]),
                                                  (hash_index[1], hash_sign[1]), dim)
    c = x.shape[2]
    return reference.compact_bilinear_pooling(x, y, (hash_index[0, :c], hash_sign[0, :c]),
                                              (hash_index[1, c:], hash_sign[1, c:]), dim)


def _reference_count_triplets(embeddings, labels, **options):
    anchors = reference.mine_triplets(embeddings, labels, **options)[0]
    return torch.bincount(anchors, minlength=len(labels))


def _reference_mine_from_bank(*args, per_anchor=None, chunk_size=None, **options):
    assert per_anchor is None  # the reference mines every triplet; chunks never change them
    return reference.mine_from_bank(*args, **options)


# ---------------------------------------------------------------------------------------------
# Modules and baselines on an example's inputs

def _class_loss_module(cls, **options):
    def module(example):
        logits, target, counts = example.args
        loss = cls(counts, **options).to(logits.device)
        return lambda: loss(logits, target)
    return module


def _compact_bilinear_module(example):
    x, _, _, dim = example.args
    pooling = fo.nn.CompactBilinearPooling(x.shape[2], dim, seed=0, input_format="NLC",
                                           sqrt_normalize=False).to(x.device, x.dtype)
    return lambda: pooling(x)


def _cb_baseline(example):
    """F.cross_entropy(weight=)"""
    logits, target, counts = example.args
    weights = fo.class_balanced_weights(counts, 0.9999).to(logits.dtype)
    return lambda: F.cross_entropy(logits, target, weight=weights)


def _logit_adjusted_baseline(example):
    """F.cross_entropy(logits + offsets)"""
    logits, target, counts = example.args
    offsets = fo.logit_adjustment_offsets(counts).to(logits.dtype)
    return lambda: F.cross_entropy(logits + offsets, target)


def _triplet_baseline(example):
    """F.triplet_margin_loss on B triplets"""
    embeddings, _ = example.args
    half = len(embeddings) // 2
    return lambda: F.triplet_margin_loss(embeddings, embeddings.roll(half, 0),
                                         embeddings.roll(1, 0))


def _bilinear_baseline(example):
    """bilinear pooling (einsum)"""
    x = example.args[0]
    return lambda: torch.einsum("nlc,nld->ncd", x, x)


# ---------------------------------------------------------------------------------------------

def _descriptor(name: str, module: str) -> Op:
    """A global descriptor: a one-line composition (a max, a mean, a power mean over locations)
    whose reference would restate it; test_global_descriptors.py checks its formula."""
    return Op(f"retrieval.{name}", _feature_maps, "tests/test_global_descriptors.py",
              native=False, reference=False, thread_invariant=(), modules=(module,))

REGISTRY: dict[str, Op] = {op.name: op for op in [
    Op("kernel_pooling", _kernel_pooling, "tests/test_kernel_pooling.py",
       modules=("KernelPooling",), bench="kernel_pooling"),
    Op("compact_bilinear_pooling", _compact_bilinear, "tests/test_kernel_pooling.py",
       reference=_reference_compact_bilinear, modules=("CompactBilinearPooling",),
       module=_compact_bilinear_module, bench="kernel_pooling", baseline=_bilinear_baseline),
    Op("class_balanced_loss", lambda r, t, d: dataclasses.replace(
        _class_loss(r, t, d), kwargs={"loss_type": "softmax"}),
       "tests/test_class_balanced_loss.py", modules=("ClassBalancedLoss",),
       module=_class_loss_module(fo.nn.ClassBalancedLoss, loss_type="softmax"),
       bench="class_balanced_loss", baseline=_cb_baseline),
    Op("logit_adjusted_loss", _class_loss, "tests/test_long_tail_losses.py",
       modules=("LogitAdjustedLoss",), module=_class_loss_module(fo.nn.LogitAdjustedLoss),
       bench="long_tail_losses", baseline=_logit_adjusted_baseline),
    Op("balanced_softmax_loss", _class_loss, "tests/test_long_tail_losses.py",
       modules=("BalancedSoftmaxLoss",), module=_class_loss_module(fo.nn.BalancedSoftmaxLoss),
       bench="long_tail_losses"),
    Op("ldam_loss", functools.partial(_class_loss, cosines=True),
       "tests/test_long_tail_losses.py", modules=("LDAMLoss",),
       module=_class_loss_module(fo.nn.LDAMLoss), bench="long_tail_losses"),
    Op("softmax_focal_loss", functools.partial(_class_loss, counts=False),
       "tests/test_long_tail_losses.py", modules=("SoftmaxFocalLoss",),
       bench="long_tail_losses"),
    # the gradient goes through torch's CPU GEMM, which splits work by thread count
    Op("triplet_margin_loss", _triplet, "tests/test_triplet.py", thread_invariant=("forward",),
       modules=("TripletMarginLoss", "TripletAnchorPointLoss"), bench="triplet",
       baseline=_triplet_baseline),
    Op("mine_triplets", _triplet, "tests/test_triplet.py", bench="triplet"),
    Op("count_triplets", _triplet, "tests/test_triplet.py", reference=_reference_count_triplets,
       bench="triplet"),
    Op("mine_from_bank", _bank, "tests/test_triplet.py", reference=_reference_mine_from_bank,
       bench="triplet"),
    Op("retrieval.contrastive_loss", _triplet, "tests/test_retrieval_postprocessing.py",
       native=False, thread_invariant=(), modules=("ContrastiveLoss",)),
    Op("retrieval.isqrt_cov", _feature_maps, "tests/test_global_descriptors.py", native=False,
       thread_invariant=(), modules=("ISqrtCovPooling",), bench="pooling_heads"),
    _descriptor("mac", "MAC"), _descriptor("spoc", "SPoC"), _descriptor("gem", "GeM"),
    _descriptor("rmac", "RMAC"), _descriptor("crow", "CroW"),
]}

# The second form of compact bilinear pooling (y given) runs the same suites under its own key.
TWO_INPUT = Op("compact_bilinear_pooling", _two_input_compact_bilinear,
               "tests/test_kernel_pooling.py", reference=_reference_compact_bilinear)
CALLS: dict[str, Op] = {**REGISTRY, "compact_bilinear_pooling[y]": TWO_INPUT}

# Public functions that are not ops (closed-form helpers with value tests in their op's test
# module; retrieval's post-processing of finished descriptors, fuzzed in test_fuzz.py), and nn
# modules that compute no registered op (classifier heads, loss bases, a loss over a linear
# head: test_decoupled_classifiers.py, test_long_tail_losses.py, test_train.py).
NOT_OPS = {
    "finegrained_ops": {"class_balanced_weights", "draw_hashes", "draw_two_input_hashes",
                        "effective_number", "estimate_rbf_gamma", "ldam_margins", "logit_adjust",
                        "logit_adjustment_offsets", "rbf_alpha", "sigmoid_bias_init",
                        "signed_sqrt"},
    "finegrained_ops.retrieval": {"PCAWhitening", "class_activation_map",
                                  "database_augmentation", "diffusion_rerank",
                                  "query_expansion", "rmac_regions", "same_label_pairs"},
}
NOT_OP_MODULES = {"AnchorPointClassifier", "ClassCountsLoss", "ClassWeightedLoss",
                  "CosineLinear", "LearnableWeightScaling", "SuperClassInstanceLoss"}


def native_ops() -> dict[str, Op]:
    return {key: op for key, op in CALLS.items() if op.native}


def sanitized_test_modules() -> list[str]:
    """The test modules `make sanitize` runs (with its keyword selection): the suites above
    and every op's own."""
    suites = ["tests/test_fuzz.py", "tests/test_cuda_emulation.py"]
    return suites + sorted({op.tests for op in REGISTRY.values()} - set(suites))


GRAD_DTYPES = (torch.float32, torch.float64)


def leaves(example: Example) -> Example:
    """example with its inputs copied to leaves, which require grad in float32 and float64."""
    return example.with_inputs(
        lambda t: t.detach().clone().requires_grad_(t.dtype in GRAD_DTYPES))


def results(call: Callable[[Example], Any],
            example: Example) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(outputs, gradients): call(example)'s outputs (an op, or its reference), and the
    gradients of their sum with respect to the inputs (none when no output is differentiable:
    the miners; the inputs are copied to leaves)."""
    example = leaves(example)
    out = call(example)
    outputs = list(out) if isinstance(out, tuple) else [out]
    differentiable = [o for o in outputs if o.requires_grad]
    grads = []
    if differentiable:
        grads = torch.autograd.grad(sum(o.sum() for o in differentiable), example.tensors(),
                                    allow_unused=True)
    return [o.detach() for o in outputs], [g for g in grads if g is not None]


def step(op: Op, example: Example) -> Callable[[], None]:
    """One forward + backward of op on example's inputs made leaves (forward only for the
    miners): the step the long runs repeat."""
    example = leaves(example)

    def run():
        for t in example.tensors():
            t.grad = None
        out = op(example)
        outputs = out if isinstance(out, tuple) else (out,)
        differentiable = [o for o in outputs if o.requires_grad]
        if differentiable:
            sum(o.sum() for o in differentiable).backward()
    return run
