"""Shared fixtures: the device list, the hypothesis profile, and the native-build guard."""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import finegrained_ops  # noqa: F401  (a missing extension fails the session loudly here)
from finegrained_ops._native import BUILD_INFO

# Native ops are slow to start under hypothesis' default deadline; examples are sized for CI.
settings.register_profile(
    "ci", deadline=None, max_examples=40, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=400)
# make sanitize (tools/sanitize.py): the same tests, fewer examples, under ASan + UBSan.
settings.register_profile("sanitize", parent=settings.get_profile("ci"), max_examples=8)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CUDA_OK = BUILD_INFO["with_cuda"] and torch.cuda.is_available()


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Each test taking `device` runs on the CPU and, where the build and machine allow, CUDA."""
    if request.param == "cuda" and not CUDA_OK:
        pytest.skip("CUDA kernels not built or no CUDA device on this machine")
    return torch.device(request.param)
