"""Triplet mining + loss + backward: native fused op vs the in-package brute-force reference vs
pytorch-metric-learning's TripletMarginLoss (all triplets, AvgNonZero, LpDistance(power=2)),
at D=128 with 32 samples per class; then bank mining (quasi-online sampling) at N=50 000.

    python benchmarks/bench_triplet.py [--device cpu|cuda] [--repeats N] [--json PATH]

Prints median times, how many times faster native is, and the peak memory of each step.
The reference (cubic memory) runs at the smallest batch only, PML up to B=1024 (beyond, its
B x B x B mask passes INT_MAX and it falls back to a Python loop over anchors).
"""
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, measure, parse_args, print_table, save  # noqa: E402

DIM, PER_CLASS, MARGIN = 128, 32, 0.2
BATCHES = {"cpu": [256, 1024, 4096], "cuda": [256, 1024, 4096, 8192]}
REFERENCE_MAX_B, PML_MAX_B = 256, 1024
BANK_SIZE, BANK_CLASSES, BANK_QUERIES, PER_ANCHOR = 50_000, 100, [1024, 4096], 10


def batch(b, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, DIM, generator=g)
    labels = torch.arange(b // PER_CLASS).repeat_interleave(PER_CLASS)
    return emb.to(device), labels.to(device)


def loss_fn(candidate):
    import finegrained_ops as fo
    if candidate == "native":
        return functools.partial(fo.triplet_margin_loss, margin=MARGIN)
    if candidate == "reference":
        return functools.partial(fo.reference.triplet_margin_loss, margin=MARGIN)
    from pytorch_metric_learning import distances, losses
    return losses.TripletMarginLoss(margin=MARGIN, distance=distances.LpDistance(power=2))


def setup_loss(candidate, b, device):
    emb, labels = batch(b, device)
    emb.requires_grad_()
    fn = loss_fn(candidate)

    def step(x, y):
        x.grad = None
        fn(x, y).backward()

    return step, (emb, labels)


def setup_bank(queries, device):
    import finegrained_ops as fo
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(BANK_SIZE, DIM, generator=g).to(device)
    labels = torch.randint(BANK_CLASSES, (BANK_SIZE,), generator=g).to(device)

    def step(bank, labels):
        fo.mine_from_bank(bank[:queries], labels[:queries], bank, labels, per_anchor=PER_ANCHOR,
                          query_indices=torch.arange(queries, device=bank.device),
                          generator=torch.Generator().manual_seed(0))

    return step, (bank, labels)


def check_agreement(device):
    """Native equals the reference and PML in value and gradient (float64, B=128)."""
    import finegrained_ops as fo
    emb, labels = batch(128, device, seed=1)
    grads = []
    for candidate in ("native", "reference", "pml"):
        x = emb.double().cpu().requires_grad_() if candidate != "native" else \
            emb.double().requires_grad_()
        y = labels.cpu() if candidate != "native" else labels
        loss = loss_fn(candidate)(x, y)
        loss.backward()
        grads.append((loss.item(), x.grad.cpu()))
    for value, grad in grads[1:]:
        assert abs(value - grads[0][0]) < 1e-10 * max(1.0, abs(value)), (value, grads[0][0])
        assert torch.allclose(grad, grads[0][1], rtol=1e-8, atol=1e-10)
    triplets = fo.mine_triplets(emb, labels)
    assert triplets[0].numel() > 0


def main():
    args = parse_args(__doc__)
    check_agreement(args.device)
    rows = []
    for b in BATCHES[args.device]:
        candidates = ["native"]
        if b <= REFERENCE_MAX_B:
            candidates.append("reference")
        if b <= PML_MAX_B:
            candidates.append("pytorch-metric-learning")
        results = {c: measure(functools.partial(setup_loss, c, b), args.device,
                              repeats=args.repeats if c == "native" else 3, warmup=1)
                   for c in candidates}
        base = results["native"]
        for candidate, r in results.items():
            rows.append({"case": f"loss B={b}", "impl": candidate,
                         "median ms": f"{r['median_ms']:.1f}",
                         "native speedup": f"{r['median_ms'] / base['median_ms']:.1f}x",
                         "peak MiB": f"{r['peak_mib']:.1f}",
                         "native memory saving": f"{r['peak_mib'] / max(base['peak_mib'], 0.1):.0f}x",
                         "_raw": r})
    for queries in BANK_QUERIES:
        r = measure(functools.partial(setup_bank, queries), args.device, repeats=1, warmup=1)
        rows.append({"case": f"bank N={BANK_SIZE} Q={queries} k={PER_ANCHOR}", "impl": "native",
                     "median ms": f"{r['median_ms']:.0f}", "native speedup": "-",
                     "peak MiB": f"{r['peak_mib']:.1f}", "native memory saving": "-", "_raw": r})
    print(f"triplet mining + loss + backward on {args.device} (D={DIM}, {PER_CLASS} per class): "
          f"{machine()}")
    print_table(rows, ["case", "impl", "median ms", "native speedup", "peak MiB",
                       "native memory saving"])
    if args.json:
        save(args.json, args.device, rows)


if __name__ == "__main__":
    main()
