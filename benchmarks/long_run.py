"""Long runs: many forward+backward steps of each op, and the resident memory they leave.

    python -m benchmarks.long_run [--steps 50000] [--device cpu|cuda] [--out DIR]

Each op runs WARMUP steps (allocator pools and caches fill), then `steps` more; the report is
the growth of the process's resident set (and, on CUDA, of torch's allocated device memory)
over those steps, and the step rate. A leak of even a few bytes per step shows as a steady
growth here. Writes DIR/long-run-<device>.md and .json.
"""
import argparse
import json
import os
import re
import time

import torch

from tests import registry

WARMUP = 1000


def resident_mib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def steps(device):
    """name -> a function running one forward+backward step of the op on fixed inputs: every
    op of tests/registry.py on its example of 64 samples."""
    return {key: registry.step(op, op.example(64, torch.float32, device))
            for key, op in registry.CALLS.items()}


def run(num_steps, device):
    rows = []
    for name, step in steps(device).items():
        for _ in range(WARMUP):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        rss, cuda_bytes = resident_mib(), torch.cuda.memory_allocated() if device == "cuda" else 0
        began = time.perf_counter()
        for _ in range(num_steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        row = {"op": name, "steps": num_steps, "rss_growth_mib": resident_mib() - rss,
               "steps_per_s": num_steps / seconds}
        if device == "cuda":
            row["cuda_growth_mib"] = (torch.cuda.memory_allocated() - cuda_bytes) / 2**20
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()), flush=True)
        rows.append(row)
    return rows


def markdown(rows, device):
    cuda = device == "cuda"
    lines = [f"# Long runs on {device} ({rows[0]['steps']} steps per op after {WARMUP} warm-up)",
             "", "| op | steps/s | resident growth (MiB) |" + (" CUDA growth (MiB) |" if cuda else ""),
             "|---|---:|---:|" + ("---:|" if cuda else "")]
    for r in rows:
        lines.append(f"| {r['op']} | {r['steps_per_s']:.0f} | {r['rss_growth_mib']:.2f} |"
                     + (f" {r['cuda_growth_mib']:.2f} |" if cuda else ""))
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50000)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default="benchmarks/results/long-run")
    args = parser.parse_args(argv)
    rows = run(args.steps, args.device)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"long-run-{args.device}")
    with open(stem + ".json", "w") as f:
        json.dump({"device": args.device, "warmup": WARMUP, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(rows, args.device))
    print(f"wrote {stem}.md")


if __name__ == "__main__":
    main()
