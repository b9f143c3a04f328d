"""Data module: long-tail profiles and subsets, samplers, class grouping, bundled data."""
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from finegrained_ops import data


@given(num_classes=st.integers(2, 200), n_max=st.integers(20, 5000),
       factor=st.sampled_from([1, 2, 10, 20, 50, 100, 200]))
def test_long_tailed_counts_follow_the_exponential_profile(num_classes, n_max, factor):
    if n_max < factor:
        with pytest.raises(ValueError, match="empty"):
            data.long_tailed_counts(num_classes, n_max, factor)
        return
    counts = data.long_tailed_counts(num_classes, n_max, factor)
    mu = (1 / factor) ** (1 / (num_classes - 1))
    expected = [math.floor(n_max * mu ** i + 1e-9) for i in range(num_classes)]
    assert counts.tolist() == expected
    assert counts[0] == n_max and counts[-1] == n_max // factor
    assert bool((counts[:-1] >= counts[1:]).all())
    # The factor is exact up to the flooring of the smallest class.
    assert data.imbalance_factor(counts) == pytest.approx(factor, rel=1 / counts[-1].item())


def test_cifar_profile_and_imbalance_factor_errors():
    assert data.long_tailed_counts(10, 5000, 100).tolist() == [
        5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert data.imbalance_factor([500, 50, 5]) == 100.0
    with pytest.raises(ValueError, match="counts > 0"):
        data.imbalance_factor([5, 0])
    with pytest.raises(ValueError, match="imbalance_factor"):
        data.long_tailed_counts(10, 100, 0.5)


def balanced_labels(num_classes=10, per_class=100):
    g = torch.Generator().manual_seed(0)
    return torch.arange(num_classes).repeat_interleave(per_class)[torch.randperm(
        num_classes * per_class, generator=g)]


@given(seed=st.integers(0, 2**31 - 1), factor=st.sampled_from([1, 10, 50]),
       cap=st.integers(1, 120))
def test_subsets_are_reproducible_and_never_exceed_class_sizes(seed, factor, cap):
    labels = balanced_labels()
    sizes = torch.bincount(labels)
    for make in (lambda s: data.long_tailed_subset(labels, factor, seed=s),
                 lambda s: data.pseudo_uniform_subset(labels, cap, seed=s),
                 lambda s: data.balanced_subset(labels, cap, seed=s)):
        idx = make(seed)
        assert torch.equal(idx, make(seed))
        assert len(set(idx.tolist())) == len(idx) and bool((idx[1:] > idx[:-1]).all())
        assert bool((torch.bincount(labels[idx], minlength=10) <= sizes).all())
    lt = torch.bincount(labels[data.long_tailed_subset(labels, factor, seed=seed)], minlength=10)
    assert lt.tolist() == data.long_tailed_counts(10, 100, factor).tolist()
    capped = torch.bincount(labels[data.pseudo_uniform_subset(labels, cap, seed=seed)],
                            minlength=10)
    assert capped.tolist() == [min(cap, 100)] * 10


def test_different_seeds_give_different_subsets_and_short_classes_are_kept_whole():
    labels = torch.tensor([0] * 50 + [1] * 3)
    a, b = data.balanced_subset(labels, 10, seed=0), data.balanced_subset(labels, 10, seed=1)
    assert not torch.equal(a, b)
    assert torch.bincount(labels[a]).tolist() == [10, 3]
    with pytest.raises(TypeError, match="integer"):
        data.balanced_subset(torch.tensor([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match=">= 0"):
        data.balanced_subset(torch.tensor([0, -1]), 1)


def test_class_balanced_sampler_draws_classes_uniformly_and_cycles_within_them():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    sampler = data.ClassBalancedSampler(labels, num_samples=30000, seed=3)
    draws = torch.tensor(list(sampler))
    freq = torch.bincount(labels[draws], minlength=3).double() / len(draws)
    torch.testing.assert_close(freq, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015,
                               rtol=0)
    tail = draws[labels[draws] == 2]
    first_ten = tail[:10].tolist()
    assert sorted(first_ten) == list(range(990, 1000))  # every tail sample before any repeat
    assert list(sampler) == draws.tolist()
    sampler.set_epoch(1)
    assert list(sampler) != draws.tolist()


def test_samplers_split_an_epoch_across_ranks_without_overlap():
    labels = balanced_labels()
    whole = list(data.ClassBalancedSampler(labels, num_samples=300, seed=5))
    parts = [list(data.ClassBalancedSampler(labels, num_samples=300, seed=5, num_replicas=3,
                                            rank=r)) for r in range(3)]
    assert [len(p) for p in parts] == [100] * 3
    interleaved = [parts[i % 3][i // 3] for i in range(300)]
    assert interleaved == whole  # together the ranks cover the global sequence exactly once
    batches = list(data.PKBatchSampler(labels, p=4, k=5, num_batches=6, seed=2))
    rank_batches = [list(data.PKBatchSampler(labels, p=4, k=5, num_batches=6, seed=2,
                                             num_replicas=2, rank=r)) for r in range(2)]
    assert rank_batches[0] == batches[0::2] and rank_batches[1] == batches[1::2]
    with pytest.raises(ValueError, match="rank"):
        data.PKBatchSampler(labels, 2, 2, num_replicas=2, rank=2)


def test_pk_batches_hold_p_distinct_classes_of_k_samples():
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 3 + [3] * 20 + [4] * 20)
    sampler = data.PKBatchSampler(labels, p=3, k=4, seed=1)
    assert len(sampler) == len(labels) // 12
    saw_short = False
    for batch in sampler:
        assert len(batch) == 12
        classes = labels[torch.tensor(batch)].view(3, 4)
        assert bool((classes == classes[:, :1]).all())  # K consecutive samples per class
        assert len(set(classes[:, 0].tolist())) == 3
        for row, cls in zip(torch.tensor(batch).view(3, 4), classes[:, 0].tolist()):
            if cls != 2:  # classes with >= K samples never repeat one
                assert len(set(row.tolist())) == 4
            else:
                saw_short = True
    assert saw_short
    with pytest.raises(ValueError, match="only 5 non-empty classes"):
        data.PKBatchSampler(labels, p=6, k=2)


@pytest.mark.parametrize("make, match", [
    (lambda labels: data.ClassBalancedSampler(labels, num_samples=0), "num_samples"),
    (lambda labels: data.ClassBalancedSampler(labels, num_samples=2.5), "num_samples"),
    (lambda labels: data.ClassBalancedSampler(labels, num_samples="7"), "num_samples"),
    (lambda labels: data.PKBatchSampler(labels, 2, 2, num_batches=0), "num_batches"),
    (lambda labels: data.PKBatchSampler(labels, 2, 2, num_batches=-5), "num_batches"),
    (lambda labels: data.PKBatchSampler(labels, 2, 2, num_batches=2.5), "num_batches"),
    (lambda labels: data.PKBatchSampler(labels, 2, 2, num_batches=True), "num_batches")])
def test_samplers_refuse_counts_that_are_not_positive_ints(make, match):
    """int() coerced them: 0 and -5 gave 1 batch, 2.5 gave 2, '7' gave 7."""
    with pytest.raises(ValueError, match=match):
        make(balanced_labels())


def test_class_balanced_sampler_draws_as_before_from_one_sort_and_any_label_ids():
    """The sequence of the scan per class (O(samples x classes): 52 s for 200 000 samples
    over 5 000 classes), drawn from one sort of the slots; sparse ids (a label of 10^12) cost
    nothing per id."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(40, (500,), generator=g) * 7
    sampler = data.ClassBalancedSampler(labels, num_samples=3000, seed=4)
    gen = torch.Generator().manual_seed(4)
    groups = [(labels == c).nonzero().flatten() for c in labels.unique().tolist()]
    classes = torch.randint(len(groups), (3000,), generator=gen)
    expected = torch.empty(3000, dtype=torch.int64)
    for c, members in enumerate(groups):  # the previous implementation, as written
        slots = (classes == c).nonzero().flatten()
        rounds = -(-len(slots) // len(members))
        cycle = torch.cat([members[torch.randperm(len(members), generator=gen)]
                           for _ in range(rounds)]) if rounds else members[:0]
        expected[slots] = cycle[:len(slots)]
    assert list(sampler) == expected.tolist()
    sparse = torch.tensor([10**12, 3, 10**12, 3, 5, 5])
    assert sorted(set(data.ClassBalancedSampler(sparse, num_samples=60))) == list(range(6))
    batch = next(iter(data.PKBatchSampler(sparse, p=3, k=2)))
    assert sorted(sparse[batch].tolist()) == sorted(sparse.tolist())


def test_class_similarity_is_the_gram_matrix_of_class_means():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.arange(3).repeat(20)
    sim = data.class_similarity(f, y)
    brute = torch.stack([torch.stack([(f[y == a] @ f[y == b].T).mean() for b in range(3)])
                         for a in range(3)])
    torch.testing.assert_close(sim, brute)
    with pytest.raises(ValueError, match="no samples"):
        data.class_means(f, y, num_classes=4)
    with pytest.raises(ValueError, match="entries"):
        data.class_means(f, y[:10])


def test_hierarchical_groups_are_nested_and_cover_all_classes():
    features, coarse, fine = data.make_hierarchical_gaussians(4, 5, n_per_class=20, feature_dim=6,
                                                              seed=0)
    tree = data.hierarchical_groups(data.class_similarity(features, fine), group_counts=(4, 7, 18))
    assert tree.num_levels == 4 and tree.num_classes == 20
    assert tree.groups(0) == [list(range(20))]
    for level, count in enumerate((1, 4, 7, 18)):
        groups = tree.groups(level)
        assert len(groups) == count
        assert sorted(c for g in groups for c in g) == list(range(20))
        for g in range(count):
            if level:
                parent = tree.parent(level, g)
                assert set(groups[g]) <= set(tree.groups(level - 1)[parent])
                assert g in tree.children(level - 1, parent)
    # Well-separated coarse clusters are recovered exactly at the 4-group level.
    fine_to_coarse = torch.arange(20) // 5
    level1 = tree.assignments[1]
    for c in range(4):
        assert len(set(level1[fine_to_coarse == c].tolist())) == 1
    # A last level of one class per group (scipy's multi-count cut_tree got this one wrong).
    leaves = data.hierarchical_groups(data.class_similarity(features, fine), group_counts=(4, 20))
    assert leaves.groups(2) == [[c] for c in range(20)]
    with pytest.raises(ValueError, match="strictly increasing"):
        data.hierarchical_groups(torch.eye(5), group_counts=(3, 2))


def test_patch_dataset_shapes_and_nested_labels():
    images, coarse, fine = data.make_patch_dataset(n_images=256, n_super=8, fine_per_super=4,
                                                   size=32, seed=1)
    assert images.shape == (256, 3, 32, 32) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert torch.equal(coarse, fine // 4)
    assert torch.bincount(fine, minlength=32).tolist() == [8] * 32
    # Each image holds exactly one big (16x16) and one small (8x8) patch on a blank canvas.
    covered = (images.abs().sum(1) > 0).sum(dim=(1, 2))
    assert bool((covered <= 16 * 16 + 8 * 8).all()) and bool((covered >= 16 * 16).all())
    again = data.make_patch_dataset(n_images=256, n_super=8, fine_per_super=4, size=32, seed=1)
    assert torch.equal(again[0], images)


def test_gaussian_classes():
    x, y = data.make_gaussian_classes(4.0, n_per_class=2000, feature_dim=3, seed=0)
    assert x.shape == (4000, 3) and y.tolist() == [0] * 2000 + [1] * 2000
    means = torch.stack([x[y == c].mean(0) for c in range(2)]).double()
    torch.testing.assert_close(means,
                               torch.tensor([[0.0, 0, 0], [4.0, 0, 0]], dtype=torch.float64),
                               atol=0.1, rtol=0)
    feats, coarse, fine = data.make_hierarchical_gaussians(3, 2, n_per_class=10, feature_dim=4)
    assert feats.shape == (60, 4) and torch.equal(coarse, fine // 2)


def test_load_digits_splits_and_long_tail():
    d = data.load_digits(seed=0)
    assert d.train_images.shape[1:] == (1, 8, 8) and d.train_images.dtype == torch.float32
    assert len(d.train_labels) + len(d.test_labels) == 1797
    assert 0 <= d.train_images.min() and d.train_images.max() <= 1
    assert torch.bincount(d.test_labels).min() >= 50
    lt = data.load_digits(long_tailed=10, seed=0)
    counts = torch.bincount(lt.train_labels, minlength=10)
    assert counts[0] > counts[9] and data.imbalance_factor(counts) == pytest.approx(10, rel=0.1)
    assert torch.equal(lt.test_labels, d.test_labels)


def test_image_folder_reads_what_was_written(tmp_path):
    from PIL import Image

    colors = {"albatross": (255, 0, 0), "cardinal": (0, 0, 255)}
    for name, rgb in colors.items():
        (tmp_path / name).mkdir()
        for i in range(2 if name == "albatross" else 3):
            Image.new("RGB", (4, 3), rgb).save(tmp_path / name / f"{i}.png")
    (tmp_path / "cardinal" / "notes.txt").write_text("not an image")
    ds = data.ImageFolderDataset(tmp_path)
    assert ds.classes == ["albatross", "cardinal"] and len(ds) == 5
    assert ds.class_counts.tolist() == [2, 3]
    image, label = ds[3]
    assert image.shape == (3, 3, 4) and label == 1
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    (tmp_path / "cardinal" / "9.png").write_bytes(b"definitely not a png")
    broken = data.ImageFolderDataset(tmp_path)
    with pytest.raises(RuntimeError, match="9.png"):
        broken[len(broken) - 1]
    with pytest.raises(FileNotFoundError):
        data.ImageFolderDataset(tmp_path / "missing")
