"""Loads the compiled extension ``finegrained_ops._C``. There is no pure-Python fallback.

A missing or stale build is an ImportError that says how to build; the ops in
``finegrained_ops.ops`` call ``_C`` and nothing else.
"""
import torch

from ._checks import check_same_device

_BUILD_HELP = (
    "Build it in the environment you run from, against the torch installed there:\n"
    "    pip install --no-build-isolation -e .      (from a source checkout; or `make install`)\n"
    "Rebuild whenever torch is upgraded or changed."
)

try:
    from . import _C  # type: ignore[attr-defined]  # compiled: mypy sees no source
except ImportError as e:  # the message is the point: say exactly what to do
    raise ImportError(
        f"finegrained_ops: the native extension finegrained_ops._C could not be loaded ({e}).\n"
        + _BUILD_HELP
    ) from e

BUILD_INFO = dict(_C.build_info())

if BUILD_INFO["torch_version"] != torch.__version__:
    raise ImportError(
        f"finegrained_ops: the native extension was built against torch "
        f"{BUILD_INFO['torch_version']} but torch {torch.__version__} is installed; "
        "its ABI may differ.\n" + _BUILD_HELP
    )

# The ops bound in csrc/bindings.cpp (not build_info, nor the dict of mode names).
NATIVE_OPS = tuple(sorted(n for n in dir(_C) if not n.startswith("_") and n != "build_info"
                          and callable(getattr(_C, n))))


def check_devices(**tensors) -> torch.device:
    """The one device of the tensors given by name (a ValueError listing them otherwise), which
    must be one this build has kernels for."""
    device = check_same_device(**tensors)
    require_cuda_build(device)
    return device


def require_cuda_build(device: torch.device) -> None:
    """Raise a clear error when a CUDA tensor reaches an extension built without CUDA."""
    if device.type == "cuda" and not BUILD_INFO["with_cuda"]:
        raise RuntimeError(
            "finegrained_ops was built without CUDA kernels, so CUDA tensors are not supported. "
            "Rebuild on a machine with a CUDA torch and toolkit (CUDA_HOME), or set "
            "FINEGRAINED_OPS_FORCE_CUDA=1: pip install --no-build-isolation -e ."
        )
