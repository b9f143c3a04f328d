"""Every op on a device against the same op on the CPU, forward and backward.

    python tools/gpu_smoke.py [--device cuda] [--scale full|tiny]

`full` runs the sizes users train at (kernel pooling N=32, 28x28, C=512, d=4096, p=4; the
triplet loss at B=1024 and bank mining 50 000 x 1024 queries; the class-balanced loss at
512 x 8142 with index, multi-hot and soft targets) and times the device. `tiny` reaches every
CUDA kernel (both dtypes, both class-balanced row layouts) in a few small calls: the workload
compute-sanitizer runs. Floating results are compared by their largest error relative to the
CPU result's largest magnitude; mined triplets by the share of anchors whose triplets agree.

At full scale the triplet cases run in float64. In float32 the two devices' GEMMs round
distances differently, and at these sizes that flips near-ties of the mining rules: on the CPU
alone, nudging the inputs by one ulp changes 48% of the anchors' sampled bank triplets
(50 000 x 1024) and the semihard loss gradient by 3.5e-4 of its scale (B = 1024), the very
figures a float32 GPU run showed (benchmarks/results/h100-2026-11-27/). Such a comparison tests
rounding, not the kernels. Exit status 1 if any case fails.
"""
import argparse
import statistics
import sys
import time

import torch

import finegrained_ops as fo

SCALED_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
# float32: a near-tie may round apart on the two devices and change that anchor's triplets.
MIN_AGREEING_ANCHORS = {torch.float32: 0.99, torch.float64: 1.0}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """fn()'s result and its median time in ms over `repeats` runs after one warm-up."""
    result = fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(1e3 * (time.perf_counter() - start))
    return result, statistics.median(times) if times else float("nan")


def scaled_error(expected, actual):
    expected, actual = expected.double(), actual.double().cpu()
    scale = max(expected.abs().max().item(), 1e-300) if expected.numel() else 1.0
    return (expected - actual).abs().max().item() / scale if expected.numel() else 0.0


def anchor_agreement(expected, actual, anchors):
    """Share of the anchors whose mined triplets are the same on both devices: per anchor, the
    number of triplets and an order-sensitive checksum of them, O(triplets)."""
    def per_anchor(triplets):
        a, p, n = (t.cpu() for t in triplets)
        rank = torch.arange(a.numel()) - torch.searchsorted(a, a)  # position within the anchor
        code = (p * 1_000_003 + n) * 999_983 + rank
        count = torch.bincount(a, minlength=anchors)
        checksum = torch.zeros(anchors, dtype=torch.int64).index_add_(0, a, code % (1 << 40))
        return count, checksum
    (c1, s1), (c2, s2) = per_anchor(expected), per_anchor(actual)
    return ((c1 == c2) & (s1 == s2)).double().mean().item()


def kernel_pooling_case(n, locations, channels, dim, order, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, locations, channels, generator=g, dtype=dtype)
    h, s = fo.draw_hashes(channels, dim, order, seed=0)
    alpha = torch.rand(order + 1, generator=g, dtype=dtype)
    upstream = torch.randn(n, 1 + channels + (order - 1) * dim, generator=g, dtype=dtype)

    def run(device):
        xd = x.detach().to(device).requires_grad_()
        y = fo.kernel_pooling(xd, h.to(device), s.to(device, dtype), alpha.to(device), dim)
        y.backward(upstream.to(device))
        return [y.detach(), xd.grad]

    return f"kernel_pooling {n}x{locations}x{channels} d={dim} p={order} {dtype}", run, []


def two_input_case(n, locations, channels, y_channels, dim, dtype):
    """Two-input compact bilinear pooling: hashes with sign-0 entries (left out of a sketch)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, locations, channels, generator=g, dtype=dtype)
    y = torch.randn(n, locations, y_channels, generator=g, dtype=dtype)
    h, s = fo.draw_two_input_hashes(channels, y_channels, dim, seed=0)
    upstream = torch.randn(n, dim, generator=g, dtype=dtype)

    def run(device):
        xd, yd = (t.detach().to(device).requires_grad_() for t in (x, y))
        pooled = fo.compact_bilinear_pooling(xd, h.to(device), s.to(device, dtype), dim, y=yd)
        pooled.backward(upstream.to(device))
        return [pooled.detach(), xd.grad, yd.grad]

    return f"two-input CBP {n}x{locations}x({channels}+{y_channels}) d={dim} {dtype}", run, []


def triplet_case(b, dim, classes, dtype):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(b, dim, generator=g, dtype=dtype)
    labels = torch.randint(classes, (b,), generator=g)

    def run(device):
        e = emb.detach().to(device).requires_grad_()
        loss = fo.triplet_margin_loss(e, labels.to(device), negatives="semihard")
        loss.backward()
        return [loss.detach(), e.grad]

    def mine(device):  # all of them: a sample's ranks would shift with any anchor's count
        return fo.mine_triplets(emb.to(device), labels.to(device), negatives="semihard")

    return (f"triplet loss B={b} D={dim} {dtype}", run,
            [("mine_triplets", mine, b, MIN_AGREEING_ANCHORS[dtype])])


def bank_case(bank_size, queries, dim, classes, dtype):
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(bank_size, dim, generator=g, dtype=dtype)
    labels = torch.randint(classes, (bank_size,), generator=g)

    def mine(device):
        return fo.mine_from_bank(bank[:queries].to(device), labels[:queries].to(device),
                                 bank.to(device), labels.to(device), per_anchor=10,
                                 query_indices=torch.arange(queries, device=device),
                                 generator=torch.Generator().manual_seed(0))

    return (f"mine_from_bank {bank_size}x{queries} {dtype}", None,
            [("mine_from_bank", mine, queries, MIN_AGREEING_ANCHORS[dtype])])


def class_balanced_case(n, c, loss_type, target_kind, dtype):
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(n, c, generator=g, dtype=dtype)
    counts = torch.randint(1, 1000, (c,), generator=g)
    if target_kind == "index":
        target = torch.randint(c, (n,), generator=g)
    else:
        target = (torch.rand(n, c, generator=g) < 0.01).to(dtype)
        if target_kind == "soft":
            target = target * torch.rand(n, c, generator=g, dtype=dtype)

    def run(device):
        z = logits.detach().to(device).requires_grad_()
        loss = fo.class_balanced_loss(z, target.to(device), counts.to(device), gamma=2.0,
                                      loss_type=loss_type)
        loss.backward()
        return [loss.detach(), z.grad]

    return f"class_balanced_loss {loss_type} {target_kind} {n}x{c} {dtype}", run, []


def long_tail_case(n, c, name, soft, dtype):
    """A member of the long-tail softmax family (offsets, margins, scale, focal, soft rows)."""
    g = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(n, c, generator=g, dtype=dtype)
    counts = torch.randint(1, 1000, (c,), generator=g)
    weights = torch.rand(c, generator=g, dtype=dtype) + 0.1
    if soft:
        target = torch.softmax(2 * torch.randn(n, c, generator=g, dtype=dtype), 1)
    else:
        target = torch.randint(c, (n,), generator=g)
    loss_fn = {"logit_adjusted": lambda z, t, n_, w: fo.logit_adjusted_loss(z, t, n_),
               "ldam": lambda z, t, n_, w: fo.ldam_loss(z, t, n_, class_weights=w),
               "softmax_focal": lambda z, t, n_, w: fo.softmax_focal_loss(
                   z, t, gamma=0.5, class_weights=w)}[name]

    def run(device):
        z = logits.detach().to(device).requires_grad_()
        loss = loss_fn(z, target.to(device), counts.to(device), weights.to(device))
        loss.backward()
        return [loss.detach(), z.grad]

    return f"{name} {'soft' if soft else 'index'} {n}x{c} {dtype}", run, []


LONG_TAIL = [("logit_adjusted", True), ("ldam", False), ("softmax_focal", True)]


def cases(scale):
    if scale == "full":
        yield kernel_pooling_case(32, 28 * 28, 512, 4096, 4, torch.float32)
        yield two_input_case(32, 28 * 28, 512, 256, 8192, torch.float32)
        yield triplet_case(1024, 128, 100, torch.float64)
        yield bank_case(50_000, 1024, 128, 500, torch.float64)
        for loss_type, target_kind in [("softmax", "index"), ("focal", "index"),
                                       ("focal", "multi_hot"), ("sigmoid", "soft")]:
            yield class_balanced_case(512, 8142, loss_type, target_kind, torch.float32)
        for name, soft in LONG_TAIL:
            yield long_tail_case(4096, 1000, name, soft, torch.float32)
        return
    for dtype in (torch.float32, torch.float64):
        yield kernel_pooling_case(2, 5, 8, 16, 3, dtype)
        yield two_input_case(2, 5, 8, 3, 16, dtype)
        yield triplet_case(40, 4, 5, dtype)
        yield bank_case(60, 20, 4, 5, dtype)
        for c in (10, 600):  # a warp per row, a block per row
            for loss_type, target_kind in [("softmax", "index"), ("sigmoid", "multi_hot"),
                                           ("focal", "soft")]:
                yield class_balanced_case(6, c, loss_type, target_kind, dtype)
            for name, soft in LONG_TAIL:
                yield long_tail_case(6, c, name, soft, dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per case (default: 5 at full scale, 0 at tiny)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    repeats = args.repeats if args.repeats is not None else (5 if args.scale == "full" else 0)
    failures = 0
    print(f"{'case':<58} {'check':>22} {device.type + ' ms':>10}  result")
    for name, run, mines in cases(args.scale):
        checks = []
        if run is not None:
            expected = run(torch.device("cpu"))
            actual, ms = timed(lambda: run(device), device, repeats)
            error = max(scaled_error(e, a) for e, a in zip(expected, actual))
            checks.append((name, f"scaled error {error:.1e}", ms,
                           error <= SCALED_TOLERANCE[expected[0].dtype]))
        for mine_name, mine, anchors, min_agreement in mines:
            expected = mine(torch.device("cpu"))
            actual, ms = timed(lambda: mine(device), device, repeats)
            agreement = anchor_agreement(expected, actual, anchors)
            checks.append((f"  {mine_name} ({expected[0].numel()} triplets)",
                           f"anchors agree {100 * agreement:.2f}%", ms,
                           agreement >= min_agreement))
        for label, check, ms, ok in checks:
            failures += not ok
            print(f"{label:<58} {check:>22} {ms:>10.2f}  {'ok' if ok else 'FAIL'}")
    print(f"{failures} case(s) failed" if failures else "all cases agree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
