"""The training loop (fit, extract_features, checkpoints, AMP, clipping, DDP) and the recipes."""
import copy
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import finegrained_ops as fo
from finegrained_ops.data import ClassBalancedSampler, class_similarity, hierarchical_groups
from finegrained_ops.nn import SuperClassInstanceLoss
from finegrained_ops.train import (HierarchicalCascade, QuasiOnlineBatchSampler,
                                   bootstrap_dataset, extract_features, fit, two_stage_long_tail)

from .helpers import free_port


def regression_data(n=64, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)


def linear(d=5, out=1, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(d, out)


def sgd(params, lr=0.05):
    return torch.optim.SGD(params, lr=lr)


def test_fit_decreases_loss_and_records_history():
    x, y = regression_data()
    model = linear()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    history = fit(model, F.mse_loss, loader, sgd(model.parameters()), 5, progress=False,
                  eval_fn=lambda m: {"val_mse": F.mse_loss(m(x), y)})
    assert [h["epoch"] for h in history] == list(range(5))
    assert set(history[0]) == {"epoch", "loss", "samples_per_s", "lr", "val_mse"}
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    with torch.no_grad():
        assert history[-1]["val_mse"] == pytest.approx(float(F.mse_loss(model(x), y)))


def test_fit_is_deterministic_and_progress_bar_runs():
    x, y = regression_data()
    runs = []
    for progress in (False, True):
        model = linear()
        loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                            generator=torch.Generator().manual_seed(3))
        fit(model, F.mse_loss, loader, sgd(model.parameters()), 2, progress=progress)
        runs.append(model.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_gradient_clipping_by_value_and_norm():
    x, y = regression_data()
    y = 100 * y  # large gradients
    for clip, bound in ((0.01, lambda d: d.abs().max() <= 0.01 + 1e-7),
                        (("norm", 0.5), lambda d: d.norm() <= 0.5 + 1e-6)):
        model = linear()
        before = model.weight.detach().clone()
        loader = DataLoader(TensorDataset(x, y), batch_size=64)
        fit(model, F.mse_loss, loader, sgd(model.parameters(), lr=1.0), 1, grad_clip=clip,
            progress=False)
        step = model.weight.detach() - before
        assert bound(step) and step.abs().max() > 0


def test_amp_bf16_on_cpu_and_fp16_refused():
    x, y = regression_data()
    model = linear()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    history = fit(model, F.mse_loss, loader, sgd(model.parameters()), 2, amp="bf16",
                  progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert model.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        fit(model, F.mse_loss, loader, sgd(model.parameters()), 1, amp="fp16", device="cpu")


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=-1), "epochs"), (dict(grad_clip=-1.0), "grad_clip"),
    (dict(grad_clip=("value", 1.0)), "grad_clip"), (dict(amp="fp8"), "amp")])
def test_fit_rejects_bad_arguments(kwargs, match):
    x, y = regression_data()
    model = linear()
    args = dict(epochs=1, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        fit(model, F.mse_loss, DataLoader(TensorDataset(x, y)), sgd(model.parameters()), **args)


def test_fit_requires_a_scalar_loss():
    x, y = regression_data()
    model = linear()
    with pytest.raises(ValueError, match="0-dim"):
        fit(model, lambda out, t: (out - t) ** 2, DataLoader(TensorDataset(x, y), batch_size=8),
            sgd(model.parameters()), 1, progress=False)


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    x, y = regression_data()
    labels = (y.flatten() > 0).long()

    def run(epochs, checkpoint):
        model = linear()
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        loader = DataLoader(TensorDataset(x, y), batch_size=8,
                            sampler=ClassBalancedSampler(labels, seed=1))
        history = fit(model, F.mse_loss, loader, opt, epochs, scheduler=sched,
                      checkpoint=checkpoint, progress=False)
        return model, history

    full, full_history = run(4, None)
    path = str(tmp_path / "run.pt")
    run(2, path)
    assert len(torch.load(path, weights_only=True)["history"]) == 2
    resumed, history = run(4, path)     # loads epochs 0-1, trains 2-3
    assert torch.equal(resumed.weight, full.weight) and torch.equal(resumed.bias, full.bias)
    assert [h["loss"] for h in history] == [h["loss"] for h in full_history]
    assert not os.path.exists(path + ".tmp")


def test_checkpoint_paths_and_foreign_checkpoints_are_checked_before_training(tmp_path):
    """A pathlib.Path raised a TypeError only after the first epoch had trained; a foreign
    checkpoint overwrote the model before the optimizer mismatch was reported."""
    x, y = regression_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model = linear()
    path = tmp_path / "run.pt"
    fit(model, F.mse_loss, loader, sgd(model.parameters()), 1, checkpoint=path, progress=False)
    assert len(fit(model, F.mse_loss, loader, sgd(model.parameters()), 2, checkpoint=path,
                   progress=False)) == 2
    with pytest.raises(TypeError, match="checkpoint must be a path"):
        fit(model, F.mse_loss, loader, sgd(model.parameters()), 1, checkpoint=3, progress=False)
    other = linear()
    before = copy.deepcopy(other.state_dict())
    wrong_optimizer = torch.optim.SGD([{"params": [other.weight]}, {"params": [other.bias]}],
                                      lr=0.1)
    with pytest.raises(ValueError, match="does not fit this optimizer.*Nothing was loaded"):
        fit(other, F.mse_loss, loader, wrong_optimizer, 3, checkpoint=path, progress=False)
    assert all(torch.equal(other.state_dict()[k], before[k]) for k in before)
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="lacks"):
        fit(other, F.mse_loss, loader, sgd(other.parameters()), 1,
            checkpoint=tmp_path / "foreign.pt", progress=False)


def test_loss_parameters_train_and_checkpoint(tmp_path):
    feats = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 4
    model = nn.Linear(6, 6)
    criterion = fo.nn.TripletAnchorPointLoss(4, 6, anchors_per_class=2)
    before = copy.deepcopy(criterion.state_dict())
    opt = sgd(list(model.parameters()) + list(criterion.parameters()))
    loader = DataLoader(TensorDataset(feats, labels), batch_size=10)
    fit(model, criterion, loader, opt, 1, checkpoint=str(tmp_path / "c.pt"), progress=False)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["loss_fn"]
    assert saved.keys() == before.keys()
    assert any(not torch.equal(saved[k], before[k]) for k in before)   # anchors were trained


def test_eval_fn_runs_in_eval_mode_and_leaves_batchnorm_statistics_alone():
    x, y = regression_data()
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    seen = []

    def eval_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        before = m[1].running_mean.clone()
        m(x + 100)  # an evaluation that forgets model.eval(): its data must not reach BN
        assert torch.equal(m[1].running_mean, before)
        return {}
    fit(model, F.mse_loss, DataLoader(TensorDataset(x, y), batch_size=16),
        sgd(model.parameters()), 2, eval_fn=eval_fn, progress=False)
    assert seen == [(False, False)] * 2 and model.training


def test_history_lr_is_the_epochs_and_a_finished_checkpoint_says_so(tmp_path, capsys):
    x, y = regression_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)

    def run(epochs):
        model = linear()
        opt = sgd(model.parameters(), lr=0.08)
        return fit(model, F.mse_loss, loader, opt, epochs, checkpoint=tmp_path / "run.pt",
                   scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5))
    history = run(3)
    assert [h["lr"] for h in history] == [0.08, 0.04, 0.02]  # as used, before the step
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[-3:]] == ["epoch 1/3", "epoch 2/3",
                                                          "epoch 3/3"]
    assert "loss" in lines[-1] and "lr 0.02" in lines[-1]
    assert run(3) == history
    assert "already holds 3 epochs (epochs=3): nothing to train" in capsys.readouterr().out


def test_batches_that_are_not_pairs_are_refused_with_the_fix():
    x, y = regression_data(n=8)
    model = linear()
    dict_batches = [{"image": x, "label": y}]
    with pytest.raises(TypeError, match=r"\(inputs, target\) batches, got a dict with keys "
                                        r"\['image', 'label'\]: give the loader a collate_fn"):
        fit(model, F.mse_loss, dict_batches, sgd(model.parameters()), 1, progress=False)
    with pytest.raises(TypeError, match="got a tuple of 3"):
        fit(model, F.mse_loss, [(x, y, y)], sgd(model.parameters()), 1, progress=False)


def test_extract_features_picks_the_models_output():
    x, y = regression_data(n=12)
    trunk = nn.Linear(5, 3)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk

        def forward(self, inputs):
            embedding = self.trunk(inputs)
            return embedding.sum(1, keepdim=True), embedding  # (logits, embedding)
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    with torch.no_grad():
        expected = trunk(x)
    for output in (1, lambda out: out[1]):
        feats, _ = extract_features(TwoHeads(), loader, output=output)
        torch.testing.assert_close(feats, expected)
    with pytest.raises(TypeError, match="returned a tuple, not a tensor: pass output="):
        extract_features(TwoHeads(), loader)
    with pytest.raises(ValueError, match="output=5 does not name a part"):
        extract_features(TwoHeads(), loader, output=5)


def test_extract_features_concatenates_and_restores_mode():
    x, y = regression_data(n=30)
    model = nn.Sequential(nn.Linear(5, 3), nn.Dropout(0.5))
    model.train()
    feats, labels = extract_features(model, DataLoader(TensorDataset(x, y), batch_size=7))
    assert feats.shape == (30, 3) and torch.equal(labels, y)
    torch.testing.assert_close(feats, model[0](x).detach())   # eval mode: no dropout
    assert model.training
    feats, labels = extract_features(model, DataLoader(x, batch_size=7))
    assert labels is None and feats.shape == (30, 3)


def _ddp_worker(rank, world, port, x, y, results):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = linear()
        # batch 4 per rank; DistributedSampler gives rank r items r, r+2, ...: together the
        # same global batches of 8 as the single process below
        loader = DataLoader(TensorDataset(x, y), batch_size=4)
        history = fit(model, F.mse_loss, loader, sgd(model.parameters()), 3, progress=False)
        results[rank] = (model.weight.detach().clone(), model.bias.detach().clone(), history)
        dist.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        dist.destroy_process_group()


def test_distributed_fit_equals_single_process_on_the_same_global_batch():
    x, y = regression_data(n=32)
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_ddp_worker, args=(world, free_port(), x, y, results), nprocs=world, join=True)
        results = dict(results)
    model = linear()
    history = fit(model, F.mse_loss, DataLoader(TensorDataset(x, y), batch_size=8),
                  sgd(model.parameters()), 3, progress=False)
    for rank in range(world):
        weight, bias, rank_history = results[rank]
        torch.testing.assert_close(weight, model.weight.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(bias, model.bias.detach(), rtol=1e-6, atol=1e-7)
        for got, want in zip(rank_history, history):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-6)


# --- recipes -----------------------------------------------------------------------------

def test_superclass_instance_loss_matches_eq_4_and_5_written_out():
    torch.manual_seed(0)
    instance_super = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    feats = torch.randn(5, 4, dtype=torch.float64)
    ids = torch.tensor([0, 4, 3, 5, 2])
    target = (instance_super[ids], ids)
    eff = SuperClassInstanceLoss(4, instance_super, lambda_instance=0.7).double()
    full = copy.deepcopy(eff)
    full.within_super = False
    base = F.cross_entropy(eff.super_head(feats), target[0])
    logits = feats @ eff.instance_weight.T
    masked = logits.masked_fill(instance_super[None, :] != target[0][:, None], float("-inf"))
    torch.testing.assert_close(eff(feats, target), base + 0.7 * F.cross_entropy(masked, ids))
    torch.testing.assert_close(full(feats, target), base + 0.7 * F.cross_entropy(logits, ids))
    eff.lambda_instance = 0.0
    torch.testing.assert_close(eff(feats, target), base)
    with pytest.raises(ValueError, match="disagree"):
        eff(feats, (target[0].flip(0), ids))
    with pytest.raises(ValueError, match="instance_ids"):
        eff(feats, (target[0], ids + 10))


def test_superclass_instance_training_on_patch_data():
    images, coarse, fine = fo.data.make_patch_dataset(n_images=64, n_super=4, fine_per_super=2,
                                                      size=16, seed=0)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(2), nn.Flatten())
    criterion = SuperClassInstanceLoss(32, coarse, lambda_instance=1.0)
    # batches (image, (super-class, instance id)): every image is its own instance class
    loader = DataLoader(list(zip(images, zip(coarse, torch.arange(64)))), batch_size=16,
                        shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(list(backbone.parameters()) + list(criterion.parameters()), 1e-2)
    history = fit(backbone, criterion, loader, opt, 20, progress=False)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]


def digits_tensors(long_tailed=None):
    d = fo.data.load_digits(long_tailed=long_tailed, seed=0)
    return d.train_images.flatten(1), d.train_labels, d.test_images.flatten(1), d.test_labels


def test_two_stage_long_tail_fine_tunes_on_a_balanced_subset():
    x, y, xt, yt = digits_tensors(long_tailed=20)
    model = linear(64, 10)
    h1, h2, subset = two_stage_long_tail(
        model, F.cross_entropy, TensorDataset(x, y), y, sgd, lr=0.5, epochs=3,
        finetune_lr=0.05, finetune_epochs=2, batch_size=32, progress=False)
    assert len(h1) == 3 and len(h2) == 2
    counts = y[subset].bincount(minlength=10)
    assert bool((counts == y.bincount().min()).all())
    assert h2[0]["lr"] == 0.05 and h1[0]["lr"] == 0.5
    tail = yt >= 5
    stage1 = linear(64, 10)
    fit(stage1, F.cross_entropy, DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                                            generator=torch.Generator().manual_seed(0)),
        sgd(stage1.parameters(), 0.5), 3, progress=False)
    acc = lambda m: (m(xt[tail]).argmax(1) == yt[tail]).float().mean()   # noqa: E731
    assert acc(model) > acc(stage1)   # fine-tuning on the balanced subset helps the tail


def cascade_setup(threshold):
    x, y, xt, yt = digits_tensors()
    tree = hierarchical_groups(class_similarity(x, y), group_counts=(3, 10))
    root = linear(64, 10)
    cascade = HierarchicalCascade(tree, root, threshold, lambda p: sgd(p, 0.5), epochs=3,
                                  batch_size=64, progress=False)
    return cascade.fit(x, y), tree, xt, yt


def test_hierarchical_cascade_trains_every_node_and_counts_evaluations():
    cascade, tree, xt, yt = cascade_setup(0.1)
    assert set(cascade.models) == {(lvl, g) for lvl in range(3) for g in range(len(tree.groups(lvl)))}
    scores, evaluated = cascade.predict(xt)
    assert scores.shape == (len(xt), 10)
    assert evaluated[(0, 0)] == len(xt)
    for level in (1, 2):
        for group in range(len(tree.groups(level))):
            parent = tree.parent(level, group)
            assert evaluated[(level, group)] <= evaluated[(level - 1, parent)]
    assert (scores.argmax(1) == yt).float().mean() > 0.85
    # a node's negatives are other classes' samples only
    for (level, group), (pos, neg) in cascade.train_sizes.items():
        assert pos == int(torch.isin(digits_tensors()[1],
                                     torch.tensor(tree.groups(level)[group])).sum())
    assert cascade.train_sizes[(0, 0)][1] == 0


def test_hierarchical_cascade_rejects_everything_at_a_threshold_near_one():
    cascade, tree, xt, _ = cascade_setup(1 - 1e-7)
    scores, evaluated = cascade.predict(xt)
    assert bool(torch.isinf(scores).all())
    assert all(n == 0 for (level, _), n in evaluated.items() if level > 0)
    with pytest.raises(ValueError, match="thresholds"):
        HierarchicalCascade(tree, linear(64, 10), [0.5], sgd)


def test_bootstrap_dataset_grows_the_set_with_oracle_checked_positives():
    x, y, _, _ = digits_tensors()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=g)
    seed, pools = order[:100], list(order[100:700].chunk(3))
    calls = []

    def train_fn(s_idx, s_lab, h_idx, h_lab):
        calls.append((len(s_idx), len(h_idx)))
        model = linear(64, 10)
        fit(model, F.cross_entropy, DataLoader(TensorDataset(x[s_idx], s_lab), batch_size=32),
            sgd(model.parameters(), 0.5), 5, progress=False)
        return model

    def score_fn(model, pool):
        with torch.no_grad():
            return model(x[pool]).softmax(1)

    result = bootstrap_dataset(seed, y[seed], pools, train_fn, score_fn,
                               oracle=lambda idx, pred: y[idx] == pred)
    assert len(calls) == 4 and calls[0] == (100, 0)
    assert len(result.indices) > 100
    assert torch.equal(y[result.indices], result.labels)               # only true positives added
    assert bool((y[result.hard_negative_indices] != result.hard_negative_labels).all())
    for r in result.rounds:
        assert r["true_positives"] + r["false_positives"] == r["confident"] <= r["candidates"]
    assert calls[-1] == (len(result.indices), len(result.hard_negative_indices))


def test_quasi_online_sampler_refreshes_the_bank_and_adds_mined_members():
    x, y, _, _ = digits_tensors()
    calls = []

    def embed():
        calls.append(1)
        return x

    sampler = QuasiOnlineBatchSampler(y, embed, p=4, k=3, refresh_every=3, per_anchor=2,
                                      num_batches=7, seed=0)
    batches = list(sampler)
    assert len(batches) == 7 and len(calls) == 3      # batches 0, 3, 6
    for batch in batches:
        anchors, mined = batch[:12], batch[12:]
        assert 12 < len(batch) <= 12 * 5 and mined == sorted(mined)
        assert not set(mined) & set(anchors)
        # local positives (an anchor's class) and hard negatives (another class) both join
        same_class = torch.isin(y[mined], y[anchors])
        assert bool(same_class.any()) and bool((~same_class).any())
    assert batches == list(QuasiOnlineBatchSampler(y, lambda: x, 4, 3, refresh_every=3, per_anchor=2, num_batches=7))
    loader = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    assert len(next(iter(loader))[0]) >= 12


def test_traced_and_exported_losses_train():
    """compute_grad is decided when the op is called: a graph traced (inputs not requiring
    grad) or exported under no_grad baked it in as False, and its backward used to fail."""
    from finegrained_ops.nn import ClassBalancedLoss, TripletMarginLoss

    g = torch.Generator().manual_seed(0)
    cases = [(ClassBalancedLoss([5, 2, 9]), torch.randn(6, 3, generator=g),
              torch.tensor([0, 1, 2, 0, 1, 2])),
             (TripletMarginLoss(), torch.randn(8, 4, generator=g),
              torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))]
    for criterion, x, y in cases:
        expected_x = x.clone().requires_grad_()
        criterion(expected_x, y).backward()
        traced = torch.jit.trace(criterion, (x, y))
        with torch.no_grad():
            exported = torch.export.export(criterion, (x, y)).module()
        for graph in (traced, exported):
            xg = x.clone().requires_grad_()
            graph(xg, y).backward()
            torch.testing.assert_close(xg.grad, expected_x.grad)
