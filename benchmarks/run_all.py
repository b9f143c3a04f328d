"""The benchmark suite: every op's comparison (native vs reference vs peers, forward+backward,
after an agreement check) and its scaling curves, in one run.

    python -m finegrained_ops bench [--ops kernel_pooling triplet class_balanced_loss]
                                    [--device cpu|cuda] [--quick] [--out DIR]
    python benchmarks/run_all.py ...   (the same)

Writes DIR/bench-<device>.json, DIR/bench-<device>.md and DIR/scaling-<op>-<device>.png.
"""
import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import add_floor, columns_of, machine, measure_ceilings, print_table  # noqa: E402

OPS = {"kernel_pooling": "bench_kernel_pooling", "triplet": "bench_triplet",
       "class_balanced_loss": "bench_class_balanced_loss"}


def run(ops, device, quick, out_dir, repeats):
    os.makedirs(out_dir, exist_ok=True)
    began = time.perf_counter()
    ceilings = measure_ceilings(device)
    print(f"{device}: {ceilings['bandwidth_gbs']:.1f} GB/s copy bandwidth, "
          f"{ceilings['peak_gflops']:.0f} GFLOP/s float32 matmul (the floors' ceilings)")
    results = {}
    for op in ops:
        bench = importlib.import_module(OPS[op])
        started = time.perf_counter()
        bench.check_agreement(device)           # raises before anything is timed
        rows = bench.comparison(device, quick, repeats)
        add_floor(rows, ceilings)
        curves = bench.scaling(device, quick, max(3, repeats // 2))
        print(f"\n{op} forward+backward on {device} (native agrees with the reference)")
        print_table(rows)
        results[op] = {"rows": rows, "scaling": curves, "plot": _plot(op, curves, out_dir, device),
                       "seconds": time.perf_counter() - started}
    total = time.perf_counter() - began
    stem = os.path.join(out_dir, f"bench-{device}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": machine(), "device": device, "quick": quick, "seconds": total,
                   "ceilings": ceilings,
                   "ops": {op: {"rows": [{k: v for k, v in r.items() if k != "_raw"} | r["_raw"]
                                         for r in res["rows"]],
                                "scaling": res["scaling"]} for op, res in results.items()}},
                  f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(_markdown(results, device, quick, total, ceilings))
    print(f"\nsuite took {total:.0f} s; wrote {stem}.json, {stem}.md")
    return results


def _plot(op, curves, out_dir, device):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(4.5 * len(curves), 6.5), squeeze=False)
    for col, (sweep, series) in enumerate(curves.items()):
        for impl, points in series.items():
            if points:
                xs = [p[0] for p in points]
                axes[0][col].loglog(xs, [p[1] for p in points], marker="o", label=impl)
                axes[1][col].loglog(xs, [max(p[2], 0.01) for p in points], marker="o", label=impl)
        axes[0][col].set_title(f"{op}: time vs {sweep}")
        axes[0][col].set_ylabel("median ms (fwd+bwd)")
        axes[1][col].set_ylabel("peak MiB")
        axes[1][col].set_xlabel(sweep)
        axes[0][col].legend(fontsize=8)
    name = f"scaling-{op}-{device}.png"
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    plt.close(fig)
    return name


def _markdown(results, device, quick, total, ceilings):
    m = machine()
    lines = [f"# Benchmark suite on {device}" + (" (--quick)" if quick else ""), "",
             f"{m}. Forward + backward, medians after warm-up; peak memory: "
             + ("torch.cuda.max_memory_allocated" if device == "cuda" else
                "RSS rise of a child process") + f". Native agreed with the reference before "
             f"timing. Suite time {total:.0f} s.", "",
             f"Floor: max(bytes / {ceilings['bandwidth_gbs']:.1f} GB/s, FLOPs / "
             f"{ceilings['peak_gflops']:.0f} GFLOP/s), the copy bandwidth and float32 matmul rate "
             "measured on this device at the start of the run, with each op's minimum bytes and "
             "FLOPs (the `work()` model in its benchmark script); '% of floor' = floor / median.",
             ""]
    for op, res in results.items():
        cols = columns_of(res["rows"])
        lines += [f"## {op}", "", "| " + " | ".join(cols) + " |",
                  "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in res["rows"]]
        lines += ["", "Scaling (median ms / peak MiB):", ""]
        for sweep, series in res["scaling"].items():
            xs = sorted({p[0] for points in series.values() for p in points})
            lines += [f"| impl \\ {sweep} | " + " | ".join(map(str, xs)) + " |",
                      "|" + "|".join("---" for _ in range(len(xs) + 1)) + "|"]
            for impl, points in series.items():
                at = {p[0]: f"{p[1]:.2f} / {p[2]:.1f}" for p in points}
                lines.append(f"| {impl} | " + " | ".join(at.get(x, "-") for x in xs) + " |")
            lines.append("")
        lines += [f"![{op} scaling]({res['plot']})", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m finegrained_ops bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", choices=list(OPS), default=list(OPS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small shapes, short sweeps")
    parser.add_argument("--out", default="bench-results")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per case (default 10, quick 3)")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device visible to torch")
    repeats = args.repeats or (3 if args.quick else 10)
    run(args.ops, args.device, args.quick, args.out, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
