"""The largest sizes the ops support, run on demand (README, scale limits): minutes and up to
~20 GiB of memory, so CI skips them. FINEGRAINED_OPS_SCALE=1 pytest tests/test_scale.py -s

Every index in the native code is int64; these sizes cross 2^31 elements where memory allows
(class-balanced logits, kernel-pooling input), and each result is checked against an
independent computation that stays below it.
"""
import os
import time

import pytest
import torch

import finegrained_ops as fo
from finegrained_ops import reference

from .helpers import assert_relative_close

pytestmark = pytest.mark.skipif(os.environ.get("FINEGRAINED_OPS_SCALE") != "1",
                                reason="scale limits: set FINEGRAINED_OPS_SCALE=1 (minutes, "
                                       "~20 GiB of memory)")


def timed(name, fn):
    began = time.perf_counter()
    out = fn()
    print(f"\n{name}: {time.perf_counter() - began:.1f} s")
    return out


def test_triplet_loss_at_batch_16384():
    g = torch.Generator().manual_seed(0)
    b = 16384
    emb = torch.randn(b, 64, generator=g).requires_grad_()
    labels = torch.randint(0, 2000, (b,), generator=g)

    def step():
        loss = fo.triplet_margin_loss(emb, labels, negatives="hardest", reduction="mean")
        return loss, torch.autograd.grad(loss, emb)[0]

    loss, grad = timed("triplet loss fwd+bwd B=16384", step)
    # Batch-hard by hand, 1024 anchors at a time: mean over anchors with a positive.
    x = torch.nn.functional.normalize(emb.detach().double(), dim=1)
    total, anchors = 0.0, 0
    for start in range(0, b, 1024):
        d = torch.cdist(x[start:start + 1024], x).pow(2)
        same = labels[start:start + 1024, None] == labels[None]
        same[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = False
        has = same.any(1)
        hardest_pos = d.masked_fill(~same, -1).amax(1)
        hardest_neg = d.masked_fill(labels[start:start + 1024, None] == labels[None],
                                    float("inf")).amin(1)
        total += (hardest_pos - hardest_neg + 0.2).clamp_min(0)[has].sum().item()
        anchors += int(has.sum())
    assert loss.item() == pytest.approx(total / anchors, rel=1e-4)
    assert torch.isfinite(grad).all()


def test_bank_mining_against_200000_rows():
    g = torch.Generator().manual_seed(1)
    bank = torch.nn.functional.normalize(torch.randn(200_000, 64, generator=g), dim=1)
    bank_labels = torch.randint(0, 5000, (200_000,), generator=g)
    query, query_labels = bank[:1024], bank_labels[:1024]
    a, p, n = timed("mine_from_bank 1024 x 200000", lambda: fo.mine_from_bank(
        query, query_labels, bank, bank_labels, per_anchor=1, query_indices=torch.arange(1024),
        generator=torch.Generator().manual_seed(0)))
    assert a.numel() > 900 and torch.equal(a, torch.unique(a))
    assert (query_labels[a] == bank_labels[p]).all() and (query_labels[a] != bank_labels[n]).all()
    assert (p != a).all()
    d = lambda i, j: (query[i].double() - bank[j].double()).pow(2).sum(1)  # noqa: E731
    assert (d(a, p) - d(a, n) + 0.2 > -1e-5).all()  # violating, up to float32 distances


def test_class_balanced_loss_past_2_31_elements():
    n, c = 65_600, 32_768  # N * C = 2^31 + 3 * 2^18 float32 logits (8.6 GB)
    logits = torch.empty(n, c).normal_(generator=torch.Generator().manual_seed(2))
    target = torch.arange(n) % c
    counts = torch.arange(1, c + 1)
    with torch.no_grad():
        rows = timed("class-balanced focal N*C > 2^31", lambda: fo.class_balanced_loss(
            logits, target, counts, reduction="none"))
    last = slice(n - 4, n)  # rows past element 2^31
    expected = reference.class_balanced_loss(logits[last].double(), target[last], counts,
                                             reduction="none")
    assert_relative_close(rows[last].double(), expected, 1e-5)


def test_kernel_pooling_past_2_31_elements():
    n, locations, c = 2, 2**21 + 16, 512  # N * L * C > 2^31 float32 inputs (8.6 GB)
    x = torch.empty(n, locations, c).normal_(generator=torch.Generator().manual_seed(3))
    hash_index, hash_sign = fo.draw_hashes(c, 64, 2, seed=0)
    alpha = torch.ones(3)
    with torch.no_grad():
        y = timed("kernel pooling N*L*C > 2^31",
                  lambda: fo.kernel_pooling(x, hash_index, hash_sign, alpha, 64))
        half = locations // 2  # every block is a mean over locations: halves average to it
        halves = [fo.kernel_pooling(x[:, s], hash_index, hash_sign, alpha, 64)
                  for s in (slice(0, half), slice(half, None))]
    assert_relative_close(y, (halves[0] + halves[1]) / 2, 1e-4)
