"""One vocabulary across the ops (docs/semantics.md §1): every loss's reduction names come from
one list, and every default of a `reduction` parameter is one of them."""
import dataclasses
import importlib
import inspect

from .helpers import public_api

VOCABULARY = {"none", "sum", "mean", "weighted_mean", "mean_nonzero"}


def test_every_reduction_choice_is_in_the_vocabulary():
    for module in ("ops.class_loss", "ops.triplet", "retrieval.contrastive_loss"):
        choices = importlib.import_module(f"finegrained_ops.{module}").REDUCTIONS
        assert set(choices) <= VOCABULARY, (module, choices)


def _signatures():
    """(name, signature) of every public function and constructor (not of the result records:
    dataclasses and named tuples, whose fields are data)."""
    for name, obj in public_api():
        if dataclasses.is_dataclass(obj) or (inspect.isclass(obj) and issubclass(obj, tuple)):
            continue
        yield name, inspect.signature(obj)


def test_every_reduction_default_is_in_the_vocabulary():
    defaults = {name: sig.parameters["reduction"].default for name, sig in _signatures()
                if "reduction" in sig.parameters}
    assert len(defaults) >= 10, defaults  # the losses were found
    outside = {name: d for name, d in defaults.items() if d not in VOCABULARY}
    assert not outside, outside


# Optional data arguments (what is computed on, not how: a gallery, extra negatives, the second
# input of compact bilinear pooling): these may stay positional.
DATA_ARGUMENTS = {"gallery", "gallery_labels", "extra_negatives", "extra_negative_labels",
                  "transform", "y"}


def test_no_hyperparameter_is_positional():
    """Every defaulted parameter of a public function or constructor is keyword-only, unless
    it is an optional data argument."""
    positional = {}
    for name, sig in _signatures():
        names = [p.name for p in sig.parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
                 and p.name not in DATA_ARGUMENTS]
        if names:
            positional[name] = names
    assert not positional, positional


# docs/semantics.md §1, Names: `dim` is torch's axis only (no public signature takes one) and
# `gamma` the focal exponent only; the widths, the RBF γ and the other scales have their own
# names.
ONE_MEANING = {"dim": set(),
               "gamma": {"finegrained_ops.class_balanced_loss",
                         "finegrained_ops.softmax_focal_loss",
                         "finegrained_ops.nn.ClassBalancedLoss",
                         "finegrained_ops.nn.SoftmaxFocalLoss"}}


def test_dim_and_gamma_have_one_meaning():
    taken = {(name, parameter) for name, sig in _signatures() for parameter in ONE_MEANING
             if parameter in sig.parameters}
    assert taken == {(name, p) for p, names in ONE_MEANING.items() for name in names}
