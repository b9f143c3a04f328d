"""Test helpers shared by the op tests."""
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


def assert_relative_close(actual, expected, tol):
    """max |a - e| <= tol * max |e|: an error measured against the result's own scale (its
    largest entry), for results summed in different orders or on different devices."""
    if not expected.numel():
        return
    scale = max(expected.abs().max().item(), torch.finfo(expected.dtype).tiny)
    err = (actual.to(expected.dtype) - expected).abs().max().item()
    assert err <= tol * scale, f"relative error {err / scale:.3g} > {tol}"


def free_port():
    """A free TCP port on localhost for a torch.distributed rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
