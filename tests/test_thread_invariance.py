"""Which results are bitwise independent of the number of CPU threads (docs/semantics.md §1).

Invariant: the mined triplets and their counts (the CPU distances are summed in a fixed order
by one thread each), the triplet loss value, and the class-balanced loss with its gradient.
Not invariant: kernel pooling and the triplet loss's gradient go through torch's CPU FFTs and
GEMMs, which split batched work across threads; for a fixed thread count they are still
bitwise reproducible (the determinism tests of each op).
"""
import pytest
import torch

import finegrained_ops as fo

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


def assert_all_equal(results):
    for other in results[1:]:
        for a, b in zip(results[0], other):
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
