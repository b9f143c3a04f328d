"""Argument checks shared by every subpackage: each error names the argument, the expected and
the actual value. Pure Python: nothing here imports the native extension, so data/, metrics/
and train/ take their checks from here, never from ops/."""
import math

import torch

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name, t, *, dim=None, dtypes=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {t.dtype}")


def check_labels(name, labels, n):
    """The labels of a loss or miner a training step calls (docs/semantics.md §1, Labels): a
    (n,) int64 tensor, used as it is (no conversion, no copy, no host sync); any values, as
    labels are only compared for equality."""
    check_tensor(name, labels, dim=1)
    if labels.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 class labels, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but the embeddings have {n} rows")


def check_same_device(**tensors):
    """The one device of all the tensors given by name, or a ValueError listing them."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")
    return next(iter(devices.values()))


def check_int(name, value, low=1):
    """value must be an int (not a bool) >= low, or a ValueError naming it."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def check_number(name, value, low=None, high=None, *, low_open=False, high_open=False):
    """value must be a finite int or float (not a bool) in the given range, or a ValueError.

    low/high: bounds (None: unbounded); low_open/high_open: exclude the bound itself.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or value > low or (value == low and not low_open))
    ok = ok and (high is None or value < high or (value == high and not high_open))
    if not ok:
        if low is not None and high is not None:
            wanted = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            wanted = f"a finite number {'>' if low_open else '>='} {low}"
        elif high is not None:
            wanted = f"a finite number {'<' if high_open else '<='} {high}"
        else:
            wanted = "a finite number"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def as_float(name, value):
    """value as a float for a native op, which checks its range: a real number, not a bool
    (True would pass as 1.0), or a ValueError naming it (as check_number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number (not a bool), got {value!r}")
    return float(value)


def check_value(condition, message):
    """A check of tensor values (condition: a 0-dim bool tensor): a ValueError(message) on the
    CPU; on CUDA and under torch.compile a device-side assertion (torch._assert_async) that
    never syncs the host, as the native ops' checks (docs/semantics.md §1)."""
    if condition.device.type == "cpu" and not torch.compiler.is_compiling():
        if not bool(condition):
            raise ValueError(message)
    elif condition.device.type != "meta":
        torch._assert_async(condition, message)


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def compute_dtype(dtype):
    """float16/bfloat16 are computed in float32 (docs/semantics.md, dtypes); float32/float64
    as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def as_labels(labels, name="labels", n=None, device="cpu"):
    """labels as a 1-D int64 tensor of class indices >= 0 on `device` (from a tensor, array or
    sequence); n, when given, is the number of samples they must label."""
    t = torch.as_tensor(labels)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices, got {t.dtype}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} has {t.shape[0]} entries but there are {n} samples")
    t = t.to(device=device, dtype=torch.int64)
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got min {int(t.min())}")
    return t


def as_features(name, x):
    """A floating (N, D) tensor of finite values (no NaN or ±Inf), or a clear error."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N, D), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got {int(torch.isnan(x).sum())} NaN and "
                         f"{int(torch.isinf(x).sum())} infinite values")
    return x


def make_generator(seed):
    """A torch.Generator seeded with `seed`: every draw of the library comes from one, never
    from the global RNG."""
    return torch.Generator().manual_seed(int(seed))
