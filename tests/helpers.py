"""Test helpers shared by the op tests."""
import importlib
import inspect
import socket

import torch


def check_gradients(fn, inputs, gradgrad=False, **kwargs):
    """Run `torch.autograd.gradcheck` (and optionally gradgradcheck) on `fn` in float64.

    Floating inputs that require grad are checked; they must already be float64 (gradcheck's
    finite differences are meaningless in float32). Returns True or raises with gradcheck's
    report of the mismatching Jacobian entries.
    """
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.requires_grad:
            assert t.dtype == torch.float64, "gradcheck needs float64 inputs"
    assert torch.autograd.gradcheck(fn, inputs, **kwargs)
    if gradgrad:
        assert torch.autograd.gradgradcheck(fn, inputs, **kwargs)
    return True


def assert_relative_close(actual, expected, tol, smallest_scale=0.0):
    """max |a - e| <= tol * max |e|: an error measured against the result's own scale (its
    largest entry, or smallest_scale when that is larger: a result of 0 against 1e-21), for
    results summed in different orders or on different devices."""
    if not expected.numel():
        return
    scale = max(expected.abs().max().item(), smallest_scale, torch.finfo(expected.dtype).tiny)
    err = (actual.to(expected.dtype) - expected).abs().max().item()
    assert err <= tol * scale, f"relative error {err / scale:.3g} > {tol}"


def free_port():
    """A free TCP port on localhost for a torch.distributed rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PUBLIC_MODULES = ("finegrained_ops", "finegrained_ops.nn", "finegrained_ops.metrics",
                  "finegrained_ops.retrieval", "finegrained_ops.data", "finegrained_ops.train")


def public_api():
    """(qualified name, object) of every function and class the public modules export that
    the package defines, each once (the suites that hold every public signature to a rule)."""
    seen = set()
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            ours = getattr(obj, "__module__", "").startswith("finegrained_ops")
            callable_ = inspect.isfunction(obj) or inspect.isclass(obj)
            if id(obj) in seen or not ours or not callable_:
                continue
            seen.add(id(obj))
            yield f"{module_name}.{name}", obj
