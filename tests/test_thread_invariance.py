"""Which results are bitwise independent of the number of CPU threads, and that every op gives
the same bits in DataLoader workers (fork and spawn) and in a forked child as in the parent
at the same thread count (docs/semantics.md §1).

Invariant: the mined triplets and their counts (the CPU distances are summed in a fixed order
by one thread each), the triplet loss value, the class-balanced loss with its gradient, and
kernel pooling forward and backward (its FFT is our own, common/real_fft.h: each row's bits
are its own; torch's MKL FFT differs between 1 and 2 threads even on 3 rows of 16).
Not invariant: the triplet loss's gradient goes through torch's CPU GEMM, which splits
batched work across threads; for a fixed thread count it is still bitwise reproducible (the
determinism tests of each op). DataLoader workers run one thread (torch sets it), so it
differs there from a parent running more, and the process tests below pin it to the thread
count alone.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import finegrained_ops as fo

from .helpers import assert_relative_close
from .registry import CALLS, results

THREADS = (1, 2, 4)


@pytest.fixture
def across_threads():
    """Runs fn() once per thread count and returns the results."""
    previous = torch.get_num_threads()

    def run(fn):
        results = []
        for n in THREADS:
            torch.set_num_threads(n)
            results.append(fn())
        return results

    yield run
    torch.set_num_threads(previous)


def assert_all_equal(runs):
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_mined_triplets_and_the_loss_value(across_threads):
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(3000, 32, generator=g)
    labels = torch.randint(0, 50, (3000,), generator=g)
    batch = [(torch.randn(b, 8, generator=g), torch.randint(0, 3, (b,), generator=g))
             for b in range(5, 12)]

    def run():
        out = list(fo.mine_from_bank(bank[:300], labels[:300], bank, labels, per_anchor=None,
                                     chunk_size=7))
        out += fo.mine_triplets(bank[:400], labels[:400], max_triplets=5000,
                                generator=torch.Generator().manual_seed(1))
        out.append(fo.count_triplets(bank[:400], labels[:400], negatives="semihard"))
        out += [fo.triplet_margin_loss(e, y, negatives="all") for e, y in batch]
        return out

    assert_all_equal(across_threads(run))


@pytest.mark.parametrize("loss_type", ["softmax", "sigmoid", "focal"])
def test_class_balanced_loss_and_gradient(across_threads, loss_type):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(300, 1000, generator=g)
    target = torch.randint(0, 1000, (300,), generator=g)
    counts = torch.randint(1, 500, (1000,), generator=g)

    def run():
        z = logits.clone().requires_grad_()
        loss = fo.class_balanced_loss(z, target, counts, loss_type=loss_type)
        loss.backward()
        return loss.detach(), z.grad

    assert_all_equal(across_threads(run))


@pytest.mark.parametrize("n, locations, channels, dim, order", [
    (1, 441, 16, 64, 2), (2, 49, 8, 16, 3), (1, 1000, 8, 8, 4), (4, 196, 32, 32, 2),
    (3, 30, 12, 4096, 2), (2, 17, 5, 37 * 2, 3), (1, 5, 3, 13, 4)])
def test_kernel_pooling_forward_and_backward(across_threads, n, locations, channels, dim, order):
    """Every size differed between 1 and 2 threads through torch's MKL FFT (the outside report
    saw it at d <= 64); d = 74 takes Bluestein's path, 13 the odd one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, locations, channels, generator=g)
    hash_index, hash_sign = fo.draw_hashes(channels, dim, order, seed=1)

    def run():
        z = x.clone().requires_grad_()
        pooled = fo.kernel_pooling(z, hash_index, hash_sign, torch.ones(order + 1), dim)
        pooled.square().sum().backward()
        return pooled.detach(), z.grad

    assert_all_equal(across_threads(run))


@pytest.mark.parametrize("key", sorted(CALLS))
def test_registered_op(across_threads, key):
    """Every registered op's outputs and gradients at 1, 2 and 4 threads: each bitwise
    reproducible at its thread count, bitwise the same across counts where the registry says
    the op is invariant (op.thread_invariant), and close otherwise."""
    op = CALLS[key]
    example = op.example(300, torch.float32, "cpu")
    runs = across_threads(lambda: (results(op, example), results(op, example)))
    for first, again in runs:
        for part in range(2):
            assert_all_equal([first[part], again[part]])
    (forward, backward), _ = runs[0]
    for (other_forward, other_backward), _ in runs[1:]:
        for part, ours, theirs in (("forward", forward, other_forward),
                                   ("backward", backward, other_backward)):
            for a, b in zip(ours, theirs):
                if part in op.thread_invariant or not a.is_floating_point():
                    assert torch.equal(a, b), (key, part)
                else:
                    assert_relative_close(b.double(), a.double(), 1e-5)


def op_results():
    """Every op, forward and backward, on fixed inputs: name -> tensor."""
    g = torch.Generator().manual_seed(7)
    emb, labels = torch.randn(200, 16, generator=g), torch.randint(0, 10, (200,), generator=g)
    x = torch.randn(3, 49, 32, generator=g).requires_grad_()
    hash_index, hash_sign = fo.draw_hashes(32, 64, 3, seed=1)
    logits = torch.randn(50, 20, generator=g).requires_grad_()
    target, counts = torch.randint(0, 20, (50,), generator=g), torch.arange(1, 21)
    e = emb.clone().requires_grad_()
    triplet = fo.triplet_margin_loss(e, labels, negatives="all")
    pooled = fo.kernel_pooling(x, hash_index, hash_sign, torch.ones(4), 64)
    cb = fo.class_balanced_loss(logits, target, counts)
    out = dict(zip(("anchor", "positive", "negative"), fo.mine_triplets(emb, labels)))
    out |= {"triplet": triplet, "triplet_grad": torch.autograd.grad(triplet, e)[0],
            "pooling": pooled, "pooling_grad": torch.autograd.grad(pooled.sum(), x)[0],
            "cb": cb, "cb_grad": torch.autograd.grad(cb, logits)[0]}
    return {k: v.detach() for k, v in out.items()}


class OpResults(torch.utils.data.Dataset):
    """Each item: op_results() computed in the worker process."""

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return op_results()


def assert_same_results(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name


@pytest.fixture(scope="module")
def one_thread_results():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return op_results()
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_the_parents_bits(one_thread_results, context):
    op_results()  # the parent has used every op (and OpenMP) before the workers start
    loader = torch.utils.data.DataLoader(OpResults(), batch_size=None, num_workers=1,
                                         multiprocessing_context=context)
    assert_same_results(next(iter(loader)), one_thread_results)


def test_a_forked_child_gives_the_parents_bits(one_thread_results, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.test_thread_invariance import op_results
        op_results()
        pid = os.fork()
        if pid == 0:
            torch.set_num_threads(1)  # GNU OpenMP's pool does not survive fork (README)
            torch.save(op_results(), {str(tmp_path / "child.pt")!r})
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
    """)
    run = subprocess.run([sys.executable, "-c", script], timeout=300, capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert_same_results(torch.load(tmp_path / "child.pt"), one_thread_results)
