"""Scale of the evaluation metrics on this machine: Recall@K over N = 50 000 embeddings
(D = 512, chunked, never N×N) and RankM granularity over n = 100 000 samples of k = 1 000
classes (O(n·k)).

    python -m benchmarks.bench_metrics [--json PATH]

Prints the wall time of each (one run each: these are minutes-scale jobs, not kernels).
"""
import argparse
import json
import time

import torch

from .harness import machine


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main():
    from finegrained_ops import metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    rows = []
    emb = torch.randn(50_000, 512, generator=g)
    labels = torch.randint(0, 1000, (50_000,), generator=g)
    value, seconds = timed(lambda: metrics.recall_at_k(emb, labels, ks=(1, 2, 4, 8)))
    rows.append({"metric": "recall_at_k (1,2,4,8)", "size": "N=50000, D=512",
                 "seconds": round(seconds, 1), "value": value[1]})
    centres = torch.randn(1000, 128, generator=g) * 0.5
    y = torch.arange(1000).repeat_interleave(100)
    x = centres[y] + torch.randn(100_000, 128, generator=g)
    value, seconds = timed(lambda: metrics.granularity(x, y, measure="rankm"))
    rows.append({"metric": "granularity rankm", "size": "n=100000, k=1000, D=128",
                 "seconds": round(seconds, 1), "value": value})
    print(f"metrics at scale on {machine()}")
    for r in rows:
        print(f"  {r['metric']:<24} {r['size']:<26} {r['seconds']:>7.1f} s   value {r['value']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
