"""Host time per call: every op's forward + backward on inputs so small that the kernels take
next to nothing, against the PyTorch call a user would write instead.

    python -m benchmarks.host_overhead [--device cpu|cuda] [--steps 2000] [--profile] [--launches]

What it measures is the Python, dispatcher and autograd layers and the launches: on a GPU, the
floor under every step of a small model (the H100 run, benchmarks/results/h100-2026-11-27/,
found most rows of the suite flat at 0.5-3 ms from it). One thread on the CPU, so the numbers
do not depend on the machine's cores. Prints the median microseconds per step (rounds alternating the
calls), ours, PyTorch's
call and that call under torch.compile; --launches adds the kernel launches per step on the
CUDA path (counted without a GPU); --profile adds,
for each of our steps, the host-side calls it makes (torch.profiler, 20 steps), which is where
the launches and small ATen calls to cut show up.
"""
import argparse
import statistics
import time

import torch

from tests import registry

from . import launch_count

ROWS = 4


def cases(device):
    """{name: (ours, theirs, leaves)}: for every op of tests/registry.py with a baseline, a
    call of it on its example of ROWS samples (through its module when it has one: what users
    write), the baseline's call on the same inputs, and the inputs whose gradients a step
    computes."""
    out = {}
    for key, op in registry.REGISTRY.items():
        if op.baseline is None:
            continue
        example = registry.leaves(op.example(ROWS, torch.float32, device))
        ours = op.module(example) if op.module else (lambda op=op, example=example: op(example))
        name = f"{key}{' module' if op.module else ''} B={ROWS} vs {op.baseline.__doc__}"
        out[name] = (
            ours, op.baseline(example), example.tensors())
    return out


def step(loss_fn, leaves):
    """One forward + backward of loss_fn (of the sum of its output)."""
    def run():
        for leaf in leaves:
            leaf.grad = None
        loss_fn().sum().backward()
    return run


def per_step_us(fn, device, steps):
    for _ in range(steps // 10):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e6


def median_per_step_us(fns, device, steps, rounds=7):
    """Each fn's median µs per step over `rounds` rounds of steps / rounds steps, the fns
    alternating within every round: a drift of the machine's speed (another process, the
    clock) reaches all of them alike instead of whichever ran last."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, samples in zip(fns, times):
            samples.append(per_step_us(fn, device, max(1, steps // rounds)))
    return [statistics.median(samples) for samples in times]


def print_profile(name, fn, device, steps=20):
    from torch.profiler import ProfilerActivity, profile
    for _ in range(steps):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    print(f"\n{name}: host calls over {steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25,
                                    max_name_column_width=60))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--profile", action="store_true",
                        help="also print where each of our steps spends its host time")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the torch.compile column (compiling takes seconds)")
    parser.add_argument("--launches", action="store_true",
                        help="also count each step's CUDA kernel launches (ours on the CUDA "
                             "emulation, from a checkout; PyTorch's from its ATen calls)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)
    emulation = _emulation() if args.launches else None
    print(f"{'case':<68} {'ours us':>8} {'torch us':>9} {'ratio':>6} {'compiled':>9}"
          + (f" {'ours launches':>14} {'torch launches':>15}" if args.launches else ""))
    steps = {}
    for name, (ours, theirs, leaves) in cases(device).items():
        steps[name] = step(ours, leaves)
        row = median_per_step_us([step(f, leaves) for f in (
            ours, theirs, *(() if args.no_compile else (torch.compile(theirs),)))],
            device, args.steps)
        line = f"{name:<68} {row[0]:>8.1f} {row[1]:>9.1f} {row[0] / row[1]:>5.2f}x " + (
            f"{row[2]:>9.1f}" if len(row) > 2 else f"{'-':>9}")
        if emulation is not None:
            from tests.test_cuda_emulation import emulated_cuda
            with emulated_cuda(emulation, launches=False):
                steps[name]()
                ours_launches = launch_count.count(steps[name], emulation)[0]
            line += f" {ours_launches:>14} {launch_count.count(step(theirs, leaves))[0]:>15}"
        print(line)
    if args.profile:
        for name, run in steps.items():
            print_profile(name, run, device)


def _emulation():
    """The CUDA emulation's module (tests/cuda_emulation), built on first use: our launches are
    counted on its CUDA path, PyTorch's from its ATen calls (benchmarks/launch_count.py)."""
    from tests.cuda_emulation import build
    return build.load()


if __name__ == "__main__":
    main()
