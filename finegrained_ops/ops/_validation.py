"""Argument checks shared by the ops: messages name the argument, the expected and the actual."""
import torch

from .._native import require_cuda_build

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name, t, *, dim=None, dtypes=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {t.dtype}")


def check_same_device(**tensors):
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")
    require_cuda_build(next(iter(devices.values())))


def check_int(name, value, low=1):
    """value must be an int (not a bool) >= low, or a ValueError naming it."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def compute_dtype(dtype):
    """float16/bfloat16 are computed in float32 (DESIGN §2); float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
