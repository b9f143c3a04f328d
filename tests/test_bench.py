"""Smoke test of ``python -m finegrained_ops bench --quick``: every op is checked against its
reference, timed against its peers, swept for the scaling curves and reported."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .registry import CALLS, REGISTRY


def test_bench_quick_writes_json_markdown_and_plots(tmp_path):
    out = tmp_path / "bench"
    run = subprocess.run([sys.executable, "-m", "finegrained_ops", "bench", "--quick", "--out",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    payload = json.loads((out / "bench-cpu.json").read_text())
    assert set(payload["ops"]) == {op.bench for op in REGISTRY.values() if op.bench}
    impls = {op: {r["impl"] for r in res["rows"]} for op, res in payload["ops"].items()}
    assert impls["triplet"] == {"native", "reference", "pytorch-metric-learning"}
    assert impls["class_balanced_loss"] == {"native", "reference", "unfused"}
    # --quick leaves out the torch.compile candidate (a minute of compiling per case)
    assert impls["long_tail_losses"] == {"native", "reference", "unfused"}
    assert impls["kernel_pooling"] == {"native", "reference"}
    heads = {r["impl"]: r["output dim"] for r in payload["ops"]["pooling_heads"]["rows"]}
    assert heads["iSQRT-COV"] == 128 * 129 // 2 and heads["compact bilinear d=2048"] == 2048
    assert payload["ceilings"]["bandwidth_gbs"] > 0 and payload["ceilings"]["peak_gflops"] > 0
    for res in payload["ops"].values():
        assert all(r["median_ms"] > 0 for r in res["rows"])
        # the floor is a lower bound: no implementation runs faster than it
        assert all(0 < r["floor_fraction"] <= 1 for r in res["rows"])
        for series in res["scaling"].values():
            assert len(next(iter(series.values()))) >= 3  # native's, or the base's
    markdown = (out / "bench-cpu.md").read_text()
    for op in payload["ops"]:
        plot = f"scaling-{op}-cpu.png"
        assert f"]({plot})" in markdown and os.path.getsize(out / plot) > 5000
    assert "native speedup" in run.stdout and "% of floor" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "finegrained_ops", "bench", "--ops", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def _setup_that_fails(device):
    raise ValueError("a planted failure in the benchmark child")


def test_a_benchmark_child_that_dies_raises_instead_of_hanging():
    """The GPU run found the parent waiting forever on a child that had raised."""
    from benchmarks.harness import measure
    with pytest.raises(RuntimeError, match="exited with code 1 before reporting"):
        measure(_setup_that_fails)


def test_host_overhead_runs():
    run = subprocess.run([sys.executable, "-m", "benchmarks.host_overhead", "--steps", "20",
                          "--profile", "--no-compile", "--launches"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    timed = sum(op.baseline is not None for op in REGISTRY.values())
    rows = run.stdout.splitlines()[1:1 + timed]
    assert all(float(r.split()[-5]) > 0 and int(r.split()[-1]) > 0 for r in rows), rows
    assert run.stdout.count("host calls over 20 steps") == timed
    assert "finegrained_ops::triplet_margin_loss" in run.stdout


def test_every_registered_benchmark_exists():
    """Checked here, not beside the registry test: `make sanitize` runs the tests from a copy
    of the package and tests/ that holds no benchmarks/."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    missing = [op.name for op in REGISTRY.values()
               if op.bench is not None and not (benchmarks / f"bench_{op.bench}.py").is_file()]
    assert not missing


def test_long_run_steps_every_registered_op():
    from benchmarks.long_run import steps
    registered_steps = steps("cpu")
    assert registered_steps.keys() == CALLS.keys()
    for run_step in registered_steps.values():
        run_step()
