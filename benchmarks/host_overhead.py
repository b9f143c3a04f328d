"""Host time per call: every op's forward + backward on inputs so small that the kernels take
next to nothing, against the PyTorch call a user would write instead.

    python -m benchmarks.host_overhead [--device cpu|cuda] [--steps 2000] [--profile]

What it measures is the Python, dispatcher and autograd layers and the launches: on a GPU, the
floor under every step of a small model (the H100 run, benchmarks/results/h100-2026-11-27/,
found most rows of the suite flat at 0.5-3 ms from it). One thread on the CPU, so the numbers
do not depend on the machine's cores. Prints the mean microseconds per step; --profile adds,
for each of our steps, the host-side calls it makes (torch.profiler, 20 steps), which is where
the launches and small ATen calls to cut show up.
"""
import argparse
import time

import torch
import torch.nn.functional as F

import finegrained_ops as fo


def cases(device):
    """{name: (ours, theirs)}: two steps each, forward + backward on tiny inputs."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 10, generator=g).to(device).requires_grad_()
    target = torch.randint(10, (4,), generator=g).to(device)
    weights = torch.rand(10, generator=g).to(device)
    cb = fo.nn.ClassBalancedLoss(torch.arange(1, 11) * 10, loss_type="softmax").to(device)
    emb = torch.randn(8, 4, generator=g).to(device).requires_grad_()
    labels = torch.arange(4).repeat(2).to(device)
    maps = torch.randn(1, 8, 4, 4, generator=g).to(device).requires_grad_()
    pooling = fo.nn.CompactBilinearPooling(8, 16, seed=0).to(device)

    def step(loss_fn, leaf):
        def run():
            leaf.grad = None
            loss_fn().backward()
        return run

    return {
        "class-balanced softmax 4x10 vs F.cross_entropy(weight=)": (
            step(lambda: cb(logits, target), logits),
            step(lambda: F.cross_entropy(logits, target, weight=weights), logits)),
        "triplet loss B=8 vs F.triplet_margin_loss on 8 triplets": (
            step(lambda: fo.triplet_margin_loss(emb, labels), emb),
            step(lambda: F.triplet_margin_loss(emb, emb.roll(4, 0), emb.roll(1, 0)), emb)),
        "compact bilinear 1x8x4x4 d=16 vs bilinear (einsum)": (
            step(lambda: pooling(maps).sum(), maps),
            step(lambda: torch.einsum("nchw,ndhw->ncd", maps, maps).sum(), maps)),
    }


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
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)
    print(f"{'case':<58} {'ours us':>9} {'torch us':>9}")
    steps = cases(device)
    for name, (ours, theirs) in steps.items():
        print(f"{name:<58} {per_step_us(ours, device, args.steps):>9.1f} "
              f"{per_step_us(theirs, device, args.steps):>9.1f}")
    if args.profile:
        for name, (ours, _) in steps.items():
            print_profile(name, ours, device)


if __name__ == "__main__":
    main()
