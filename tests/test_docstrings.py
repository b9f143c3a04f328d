"""Every public layer says what shapes it takes and returns, in its class docstring and on its
forward (a new user found neither on the pooling layers)."""
import inspect

import pytest
from torch import nn

import finegrained_ops as fo

# Bases a user subclasses, not layers with a forward of their own.
BASES = {"ClassCountsLoss", "ClassWeightedLoss"}
LAYERS = sorted(name for name in fo.nn.__all__
                if inspect.isclass(getattr(fo.nn, name))
                and issubclass(getattr(fo.nn, name), nn.Module) and name not in BASES)


@pytest.mark.parametrize("name", LAYERS)
def test_every_layer_documents_its_shapes(name):
    layer = getattr(fo.nn, name)
    assert "Shape:" in (layer.__doc__ or ""), f"{name}'s docstring has no 'Shape:' line"
    assert layer.forward is not nn.Module.forward and "->" in (layer.forward.__doc__ or ""), (
        f"{name}.forward has no docstring with its shapes")
