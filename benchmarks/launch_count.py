"""Kernel launches of a step on the CUDA path, counted without a GPU (docs/cuda_emulation.md).

A step's launches are our kernels' (the CUDA emulation counts each launch) plus the ATen
operators it calls that launch a CUDA kernel: every operator with a backend kernel (a CPU
kernel registered here stands for its CUDA one), less allocations, views and metadata, plus
copy_. Reads of a device value into the host (`item`, the counts mining reads back) are
counted apart. The same count of a PyTorch call, run on the CPU, is what it would launch on
CUDA. torch.profiler lists every operator called, from C++ too.
"""
import functools

import torch
from torch.profiler import ProfilerActivity, profile

# Operators with a backend kernel that launch nothing: allocations, metadata.
_NO_LAUNCH = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",
              "resize_", "set_", "lift_fresh", "_local_scalar_dense", "item"}
_HOST_READS = {"_local_scalar_dense"}
# Kernels an operator's CUDA implementation launches beyond the one counted for it: ATen clones
# the input of a complex-to-real FFT, which cuFFT overwrites (pytorch gh-34551).
_CUDA_EXTRA_LAUNCHES = {"_fft_c2r": 1}


@functools.lru_cache(maxsize=None)
def launches_a_kernel(name):
    """Whether ATen operator `name` ("aten::mul") launches a CUDA kernel (see the module)."""
    op = name.split("::", 1)[1]
    if op in _NO_LAUNCH:
        return False
    if op == "copy_":
        return True
    packet = getattr(torch.ops.aten, op, None)
    if packet is None:
        return False
    for overload in packet.overloads():
        schema = getattr(packet, overload)._schema
        if any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
            return False  # a view
        full = name if overload == "default" else f"{name}.{overload}"
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(full, "CPU"):
                return True
        except RuntimeError:  # a TorchScript builtin (aten::isfinite.float), not an operator
            continue
    return False


def count(step, emulation=None):
    """(launches, host reads, [what launched]) of one call of step(). With `emulation` (the
    module of tests/cuda_emulation, inside its emulated_cuda context), our kernels' launches
    are counted too."""
    if emulation is not None:
        emulation.take_launches()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = [e.name for e in prof.events() if e.name.startswith("aten::")]
    launched = [n for n in names if launches_a_kernel(n)]
    launched += [f"{n} (its CUDA clone)" for n in launched
                 for _ in range(_CUDA_EXTRA_LAUNCHES.get(n.split("::", 1)[1], 0))]
    if emulation is not None:
        launched += [f"ours: {launch[0]}" for launch in emulation.take_launches()]
    reads = sum(n.split("::", 1)[1] in _HOST_READS for n in names)
    return len(launched), reads, launched
