"""What the demo experiments share: run settings, the bundled data splits, a small CNN and a
train/evaluate helper around :func:`finegrained_ops.train.fit`."""
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import load_digits
from .._checks import make_generator
from ..metrics import head_tail_accuracy
from ..train import extract_features, fit


@dataclass(frozen=True)
class Settings:
    quick: bool

    def epochs(self, full, quick=None):
        return (quick if quick is not None else max(1, full // 4)) if self.quick else full

    @property
    def seeds(self):
        """Training seeds (initialisation and batch order) that results are averaged over: on
        a few hundred test images one seed cannot separate methods a point apart."""
        return (0,) if self.quick else (0, 1, 2, 3, 4)

    @property
    def averaged(self):
        """How a table's numbers were averaged, for its caption."""
        return f"mean ± std over {len(self.seeds)} seeds" if len(self.seeds) > 1 else "one seed"

    def over_seeds(self, run_seed):
        """``run_seed(seed) -> rows`` for every seed, merged by :func:`merge_runs`."""
        return merge_runs([run_seed(seed) for seed in self.seeds])


def merge_runs(runs):
    """Merge runs (lists of row dicts, one list per seed, rows in the same order) row by row:
    float columns become 'mean ± std' over the runs (the float itself for a single run); the
    other columns name the row and must be equal in every run."""
    merged = []
    for rows in zip(*runs):
        row = {}
        for key, value in rows[0].items():
            values = [r[key] for r in rows]
            if not isinstance(value, float):
                if any(v != value for v in values):
                    raise ValueError(f"column {key!r} differs between seeds: {values}")
                row[key] = value
            elif len(values) == 1:
                row[key] = value
            else:
                t = torch.tensor(values, dtype=torch.float64)
                row[key] = f"{float(t.mean()):.3g} ± {float(t.std()):.2g}"
        merged.append(row)
    return merged


@dataclass
class Split:
    x: torch.Tensor
    y: torch.Tensor


def digits_splits(long_tailed=None, seed=0):
    """Digits train (optionally long-tailed), and the balanced test split halved per class into
    validation (for choosing hyper-parameters) and test (for reporting)."""
    d = load_digits(long_tailed=long_tailed, seed=seed)
    g = make_generator(seed + 1)
    val, test = [], []
    for c in range(10):
        members = (d.test_labels == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        val.append(members[: len(members) // 2])
        test.append(members[len(members) // 2:])
    val, test = torch.cat(val).sort().values, torch.cat(test).sort().values
    return (Split(d.train_images, d.train_labels), Split(d.test_images[val], d.test_labels[val]),
            Split(d.test_images[test], d.test_labels[test]))


class SmallCNN(nn.Module):
    """Two 3x3 conv layers and a 2x2 max-pool: (N, C_in, H, W) -> a (N, 32, H/2, W/2) map,
    then ``head`` (default: 2x2 average pooling and a linear layer to ``num_classes``)."""

    def __init__(self, num_classes=10, in_channels=1, head=None, width=32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = head if head is not None else nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class RandomShift(nn.Module):
    """Training-time augmentation: translate the batch by up to ``pad`` pixels (zero padding,
    one seeded offset per batch), the random crop of Xu et al.; identity in eval mode."""

    def __init__(self, pad, seed=0):
        super().__init__()
        self.pad, self.generator = pad, make_generator(seed)

    def forward(self, x):
        if not self.training:
            return x
        h, w, p = x.shape[-2], x.shape[-1], self.pad
        dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=self.generator).tolist()
        return nn.functional.pad(x, (p, p, p, p))[..., dy:dy + h, dx:dx + w]


def train(model, loss_fn, x, targets, epochs, lr=1e-2, batch_size=64, seed=0, extra_params=(),
          batch_sampler=None, **fit_kwargs):
    """Adam on (x, targets) with seeded shuffling (or the given batch sampler); returns the
    history."""
    data = TensorDataset(x, targets) if isinstance(targets, torch.Tensor) else \
        list(zip(x, zip(*targets)))
    loader = (DataLoader(data, batch_sampler=batch_sampler) if batch_sampler is not None else
              DataLoader(data, batch_size=batch_size, shuffle=True,
                         generator=make_generator(seed)))
    params = list(model.parameters()) + list(extra_params)
    return fit(model, loss_fn, loader, torch.optim.Adam(params, lr=lr), epochs, progress=False,
               **fit_kwargs)


def embed(model, x, batch_size=512):
    """model(x) in eval mode, batched, as float32 on the CPU."""
    return extract_features(model, DataLoader(x, batch_size=batch_size))[0]


def accuracy(model, split):
    return float((embed(model, split.x).argmax(1) == split.y).float().mean())


def head_tail_errors(pred, labels, samples_per_class):
    """Error, head error and tail error (%) of predictions; head = the 5 most frequent
    training classes (ties at the 5th count included)."""
    threshold = int(samples_per_class.sort(descending=True).values[4])
    split = head_tail_accuracy(pred, labels, samples_per_class, threshold=threshold)
    return {"error": 100 * (1 - float((pred == labels).float().mean())),
            "head error": 100 * (1 - split["head"]),
            "tail error": 100 * (1 - split["tail"])}
