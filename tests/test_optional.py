"""One package boundary: torch and numpy are the only hard dependencies. `import
finegrained_ops` imports no optional one, and a call that needs a missing one raises an
ImportError naming the extra that installs it (finegrained_ops/_optional.py)."""
import subprocess
import sys

import pytest
import torch

import finegrained_ops as fo
from finegrained_ops._optional import OPTIONAL


def block(monkeypatch, top):
    """Make `top` and its submodules unimportable, as if not installed."""
    for name in [m for m in sys.modules if m == top or m.startswith(top + ".")] + [top]:
        monkeypatch.setitem(sys.modules, name, None)


def test_importing_the_package_imports_no_optional_dependency():
    """None beyond what torch imports itself (torch.hub takes tqdm when it is installed)."""
    code = ("import sys, torch\n"
            "before = set(sys.modules)\n"
            "import finegrained_ops\n"
            f"print(sorted(m for m in {sorted(OPTIONAL)!r} if m in set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _features():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 4, generator=g, dtype=torch.float64), torch.arange(12) % 3


CALLS = {
    "scipy": ("metrics", [
        lambda: fo.retrieval.diffusion_rerank(_features()[0], _features()[0], k=3),
        lambda: fo.data.hierarchical_groups(torch.eye(4), group_counts=(2,))]),
    "ot": ("metrics", [lambda: fo.metrics.domain_distance(*_features(), *_features())]),
    "sklearn": ("data", [lambda: fo.data.load_digits()]),
    "PIL": ("data", [lambda: fo.data.ImageFolderDataset(".")]),
}
DEMO = lambda: __import__("finegrained_ops.demo").demo.run_demo("unused")  # noqa: E731


@pytest.mark.parametrize("module", sorted(CALLS))
def test_a_call_without_its_optional_dependency_names_the_extra(monkeypatch, module):
    extra, calls = CALLS[module]
    assert OPTIONAL[module][1] == extra
    block(monkeypatch, module)
    for call in calls:
        with pytest.raises(ImportError, match=rf"pip install 'finegrained_ops\[{extra}\]'"):
            call()


@pytest.mark.parametrize("module", ["matplotlib", "scipy", "ot", "sklearn"])
def test_the_demo_asks_for_its_own_extra(monkeypatch, module):
    block(monkeypatch, module)
    with pytest.raises(ImportError, match=r"pip install 'finegrained_ops\[demo\]'"):
        DEMO()


def test_fit_without_tqdm_trains_and_prints_the_epoch_line(monkeypatch, capsys):
    block(monkeypatch, "tqdm")
    x, y = _features()
    model = torch.nn.Linear(4, 3).double()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    history = fo.train.fit(model, torch.nn.functional.cross_entropy, loader,
                           torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    assert len(history) == 1
    assert "epoch 1/1" in capsys.readouterr().out
