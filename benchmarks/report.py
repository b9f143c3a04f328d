"""How results are shown: table rows with native's advantage, the console table, the JSON and
Markdown reports and the scaling plots."""
import json
import os

from .harness import machine


def ratio_row(fields, result, work=None, base="native"):
    """A table row: `fields`, then the candidate's time, memory and the advantage of `base`
    (the case's first candidate, native unless a benchmark compares other things).

    work: (bytes, flops) that the computation must at least move through memory and execute
    (the inputs of :func:`add_floor`), or None where no floor is modelled."""
    if work is not None:
        result = result | {"min_bytes": work[0], "min_flops": work[1]}
    return {**fields, "median ms": f"{result['median_ms']:.2f}",
            f"{base} speedup": f"{result['speedup']:.1f}x",
            "peak MiB": f"{result['peak_mib']:.1f}",
            f"{base} memory saving": f"{result['memory_ratio']:.1f}x", "_raw": result}


def columns_of(rows):
    return [c for c in rows[0] if not c.startswith("_")]


def print_table(rows, columns=None):
    columns = columns or columns_of(rows)
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)))


def write_json(path, device, quick, seconds, ceilings, results):
    """The machine, the ceilings and every row with its raw measurement ('_raw') merged in."""
    with open(path, "w") as f:
        json.dump({"machine": machine(), "device": device, "quick": quick, "seconds": seconds,
                   "ceilings": ceilings,
                   "ops": {op: {"rows": [{k: v for k, v in r.items() if k != "_raw"} | r["_raw"]
                                         for r in res["rows"]],
                                "scaling": res["scaling"]} for op, res in results.items()}},
                  f, indent=2)


def plot(op, curves, out_dir, device):
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


def markdown(results, device, quick, total, ceilings):
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
