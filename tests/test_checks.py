"""The one home of argument checks (finegrained_ops._checks): its messages, the inputs the
ad-hoc checks it replaced let through, and that the pure-Python subpackages need nothing
native for their checks."""
import ast
import math
from pathlib import Path

import pytest
import torch

import finegrained_ops as fo
from finegrained_ops._checks import check_number
from finegrained_ops.nn import AnchorPointClassifier, ClassBalancedLoss

PACKAGE = Path(fo.__file__).parent


@pytest.mark.parametrize("subpackage", ["data", "metrics"])
def test_pure_python_subpackages_import_nothing_native(subpackage):
    for path in (PACKAGE / subpackage).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = (node.module or "").split(".")
                assert not {"ops", "nn", "train", "_native", "_C"} & set(parts), (path, parts)


@pytest.mark.parametrize("kwargs, value, message", [
    (dict(low=0), -1, "x must be a finite number >= 0, got -1"),
    (dict(low=0, low_open=True), 0, "x must be a finite number > 0, got 0"),
    (dict(low=0, high=1, low_open=True), 1.5, r"x must be in \(0, 1\], got 1.5"),
    (dict(low=0, high=1, high_open=True), 1, r"x must be in \[0, 1\), got 1"),
    (dict(), math.nan, "x must be a finite number, got nan"),
    (dict(low=0), True, "x must be a finite number >= 0, got True"),
    (dict(low=0), "1", "x must be a finite number >= 0, got '1'"),
])
def test_check_number_names_the_argument_the_range_and_the_value(kwargs, value, message):
    with pytest.raises(ValueError, match=message):
        check_number("x", value, **kwargs)
    check_number("x", 0.5, **kwargs)  # inside every range above: no error


def test_inputs_the_old_ad_hoc_checks_let_through_are_refused():
    emb, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="positive_fraction must be a real number"):
        fo.triplet_margin_loss(emb, labels, positive_fraction=True)
    with pytest.raises(ValueError, match="vote_sharpness must be a finite number > 0"):
        AnchorPointClassifier(3, 4, vote_sharpness=math.inf)
    with pytest.raises(ValueError, match="beta must be in"):
        fo.class_balanced_weights([1, 2], beta=math.nan)
    for counts in ([True, False], torch.tensor([1 + 2j, 3 + 0j]), torch.tensor([True, True])):
        with pytest.raises(TypeError, match="samples_per_class must hold numbers of samples"):
            ClassBalancedLoss(counts)
    with pytest.raises(ValueError, match="samples_per_class must be 1-D \\(C,\\) with C >= 1"):
        ClassBalancedLoss([])
