"""Triplet mining + loss + backward: native fused op vs the in-package brute-force reference vs
pytorch-metric-learning's TripletMarginLoss (all triplets, AvgNonZero, LpDistance(power=2)),
at D=128 with 32 samples per class; then bank mining (quasi-online sampling) at N=50 000.

    python -m benchmarks --ops triplet [--device cpu|cuda] [--quick]

Prints median times, how many times faster native is, and the peak memory of each step.
The reference (cubic memory) runs at the smallest batch only, PML up to B=1024 (beyond, its
B x B x B mask passes INT_MAX and it falls back to a Python loop over anchors). The suite
also runs scaling(): cost and memory against the batch size B.
"""
import functools

import torch

from .harness import compare, measure
from .report import ratio_row

DIM, PER_CLASS, MARGIN = 128, 32, 0.2
BATCHES = {"cpu": [256, 1024, 4096], "cuda": [256, 1024, 4096, 8192]}
QUICK_BATCHES = [128]
REFERENCE_MAX_B, PML_MAX_B = 256, 1024   # the reference's (B, B, B) cube: 3.4 GiB at 256
SCALING_B = [64, 128, 256, 512, 1024, 2048]
PML = "pytorch-metric-learning"
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


def work(b, dim=DIM):
    """(bytes, FLOPs) floor of mining + loss + backward: the Gram matrix x x^T and the gradient
    product W x (2 B^2 D FLOPs each); the embeddings read and their gradient written, the
    B x B distances written once and read once (float32)."""
    return 4 * (2 * b * dim + 2 * b * b), 4 * b * b * dim


def _cases(batches, device, repeats, reference_max_b=REFERENCE_MAX_B):
    """{B: {candidate: result}}: the reference up to reference_max_b, PML up to PML_MAX_B."""
    cases = {b: {c: functools.partial(setup_loss, c, b)
                 for c in ["native"] + (["reference"] if b <= reference_max_b else [])
                 + ([PML] if b <= PML_MAX_B else [])} for b in batches}
    return compare(cases, device, repeats, slow=("reference", PML))


def comparison(device, quick=False, repeats=10):
    """Rows of the main table: the loss vs reference and PML; bank mining (full run only)."""
    batches = QUICK_BATCHES if quick else BATCHES[device]
    results = _cases(batches, device, repeats)
    rows = [ratio_row({"case": f"loss B={b}", "impl": cand}, r, work(b))
            for b in batches for cand, r in results[b].items()]
    for queries in [] if quick else BANK_QUERIES:
        r = measure(functools.partial(setup_bank, queries), device, repeats=1, warmup=1)
        r.update(speedup=1.0, memory_ratio=1.0)
        rows.append(ratio_row({"case": f"bank N={BANK_SIZE} Q={queries} k={PER_ANCHOR}",
                               "impl": "native"}, r))
    return rows


def scaling(device, quick=False, repeats=5):
    """{sweep: {impl: [(B, median_ms, peak_mib)]}}: ours O(B^2) memory vs PML's O(B^3)."""
    batches = SCALING_B[:4 if quick else 6]
    results = _cases(batches, device, repeats, reference_max_b=64 if quick else 128)
    return {"batch size B": {c: [(b, results[b][c]["median_ms"], results[b][c]["peak_mib"])
                                 for b in batches if c in results[b]]
                             for c in ("native", "reference", PML)}}
