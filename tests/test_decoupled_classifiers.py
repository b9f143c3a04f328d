"""Decoupled classifiers (Kang et al.): τ-norm, LWS and classifier re-training (cRT)."""
import pytest
import torch

from finegrained_ops.nn import LearnableWeightScaling
from finegrained_ops.train import retrain_classifier, tau_normalize, tau_normalized_linear


def test_tau_normalize_rescales_each_row_by_its_norm():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(tau_normalize(w, tau=0.0), w)
    unit = tau_normalize(w, tau=1.0)
    torch.testing.assert_close(unit.norm(dim=1), torch.tensor([1.0, 0.0, 1.0],
                                                              dtype=torch.float64))
    half = tau_normalize(w, tau=0.5)  # ||w_c||^(1 - tau)
    torch.testing.assert_close(half.norm(dim=1), torch.tensor([5 ** 0.5, 0.0, 1.0],
                                                              dtype=torch.float64))
    with pytest.raises(ValueError, match="tau"):
        tau_normalize(w, tau=-1.0)
    with pytest.raises(ValueError, match="2-D"):
        tau_normalize(w[0], tau=1.0)


@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_tau_normalize_holds_over_the_float32_range(factor):
    """Rows x 1e30 came back 0 (their norm overflowed): w_c / ||w_c||^tau scales by
    factor^(1 - tau)."""
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    for tau in (1.0, 0.5):
        expected = tau_normalize(w.double(), tau=tau) * factor ** (1 - tau)
        torch.testing.assert_close(tau_normalize(w * factor, tau=tau).double(), expected,
                                   rtol=1e-5, atol=0)
    with pytest.raises(TypeError, match="weight must have dtype"):
        tau_normalize(torch.ones(2, 3, dtype=torch.int64))


def test_tau_normalized_linear_is_a_copy():
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    before = linear.weight.detach().clone()
    normed = tau_normalized_linear(linear, tau=1.0)
    x = torch.randn(5, 4)
    torch.testing.assert_close(normed(x), x @ tau_normalize(before, tau=1.0).T + linear.bias)
    torch.testing.assert_close(linear.weight, before)
    with pytest.raises(TypeError, match="nn.Linear"):
        tau_normalized_linear(torch.nn.Conv1d(1, 1, 1))


def test_learnable_weight_scaling_trains_only_its_scales():
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    lws = LearnableWeightScaling(linear)
    assert [name for name, p in lws.named_parameters() if p.requires_grad] == ["scales"]
    x = torch.randn(5, 4)
    torch.testing.assert_close(lws(x), linear(x))
    with torch.no_grad():
        lws.scales.copy_(torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(lws(x), linear(x) * torch.tensor([1.0, 2.0, 0.5]))
    lws(x).sum().backward()
    assert linear.weight.grad is None and lws.scales.grad is not None


def long_tailed_features(counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return centres[labels] + torch.randn(len(labels), 2, generator=g), labels


def tail_recall(classifier, features, labels):
    with torch.no_grad():
        pred = classifier(features).argmax(1)
    return float((pred[labels == 2] == 2).float().mean())


def test_crt_and_lws_raise_the_tail_recall_of_an_instance_balanced_classifier():
    """A linear classifier fitted to a 400:40:8 problem rarely predicts the tail class; the same
    features with class-balanced re-training (cRT) or re-scaling (LWS) do, on balanced data."""
    train_x, train_y = long_tailed_features([400, 40, 8], seed=0)
    test_x, test_y = long_tailed_features([300, 300, 300], seed=1)
    torch.manual_seed(0)
    plain = torch.nn.Linear(2, 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_x, train_y),
                                         batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    from finegrained_ops.train import fit
    fit(plain, torch.nn.functional.cross_entropy, loader,
        torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9), 30, progress=False)
    base = tail_recall(plain, test_x, test_y)

    crt = torch.nn.Linear(2, 3)
    history = retrain_classifier(crt, train_x, train_y, epochs=10, lr=0.1, batch_size=64)
    assert len(history) == 10
    lws = LearnableWeightScaling(plain)
    retrain_classifier(lws, train_x, train_y, epochs=10, lr=0.1, batch_size=64)
    assert tail_recall(crt, test_x, test_y) > base + 0.2
    assert tail_recall(lws, test_x, test_y) > base + 0.1
    with pytest.raises(ValueError, match="no trainable parameters"):
        retrain_classifier(plain.requires_grad_(False), train_x, train_y)
