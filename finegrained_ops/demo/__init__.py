"""``python -m finegrained_ops demo``: the papers' effects reproduced on bundled data, on the
CPU, with fixed seeds. One module per experiment; each prints its tables and adds them, with
its plots, to ``report.md``."""
import time

import torch

from .._optional import require
from . import (cascade, domain_similarity, granularity, kernel_pooling, long_tail,
               long_tail_baselines, metric_learning, retrieval, superclass)
from .common import Settings
from .report import Report

EXPERIMENTS = (long_tail, long_tail_baselines, kernel_pooling, metric_learning, retrieval,
               granularity, domain_similarity, superclass, cascade)
# What the experiments import beyond torch and numpy: the 'demo' extra.
DEMO_MODULES = ("matplotlib", "scipy", "ot", "sklearn")


def run_demo(out_dir, quick=False):
    """Run every experiment; write ``out_dir/report.md`` and its PNG plots. Returns the
    report's path. ``quick`` shortens training (a smoke run, not the reported numbers)."""
    for module in DEMO_MODULES:
        require(module, "the demo", extra="demo")
    import matplotlib
    matplotlib.use("Agg")

    settings = Settings(quick=quick)
    report = Report(out_dir, "finegrained_ops demo" + (" (--quick)" if quick else ""))
    report.text(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU. "
                + ("Quick mode: short training, for smoke tests only." if quick else
                   "Full run; seeds fixed."))
    timings = []
    began = time.perf_counter()
    for experiment in EXPERIMENTS:
        start = time.perf_counter()
        experiment.run(report, settings)
        timings.append({"experiment": experiment.__name__.rsplit(".", 1)[-1],
                        "seconds": time.perf_counter() - start})
    timings.append({"experiment": "total", "seconds": time.perf_counter() - began})
    report.section("Run time")
    report.table(timings)
    return report.write()
