"""The benchmark suite: every op's comparison (native vs reference vs peers, forward+backward,
after an agreement check) and its scaling curves, in one run.

    python -m benchmarks [--ops kernel_pooling class_balanced_loss long_tail_losses triplet
                          pooling_heads]
                         [--device cpu|cuda] [--quick] [--out DIR]
    python -m finegrained_ops bench ...   (the same, from a source checkout)

Writes DIR/bench-<device>.json, DIR/bench-<device>.md and DIR/scaling-<op>-<device>.png.
An op's benchmark module (bench_<op>.py) provides check_agreement(device),
comparison(device, quick, repeats) -> rows, scaling(device, quick, repeats) -> curves, and a
work() model of its minimum bytes and FLOPs for the floors.
"""
import argparse
import importlib
import os
import time

from tests import registry

from .report import markdown, plot, print_table, write_json
from .roofline import add_floor, measure_ceilings

# op -> its benchmark module: every benchmark the ops of tests/registry.py name
OPS = {bench: f"bench_{bench}" for bench in dict.fromkeys(
    op.bench for op in registry.REGISTRY.values() if op.bench)}


def run(ops, device, quick, out_dir, repeats):
    os.makedirs(out_dir, exist_ok=True)
    began = time.perf_counter()
    ceilings = measure_ceilings(device)
    print(f"{device}: {ceilings['bandwidth_gbs']:.1f} GB/s copy bandwidth, "
          f"{ceilings['peak_gflops']:.0f} GFLOP/s float32 matmul (the floors' ceilings)")
    results = {}
    for op in ops:
        bench = importlib.import_module(f"{__package__}.{OPS[op]}")
        started = time.perf_counter()
        bench.check_agreement(device)           # raises before anything is timed
        rows = bench.comparison(device, quick, repeats)
        add_floor(rows, ceilings)
        curves = bench.scaling(device, quick, max(3, repeats // 2))
        print(f"\n{op} forward+backward on {device} (native agrees with the reference)")
        print_table(rows)
        results[op] = {"rows": rows, "scaling": curves, "plot": plot(op, curves, out_dir, device),
                       "seconds": time.perf_counter() - started}
    total = time.perf_counter() - began
    stem = os.path.join(out_dir, f"bench-{device}")
    write_json(stem + ".json", device, quick, total, ceilings, results)
    with open(stem + ".md", "w") as f:
        f.write(markdown(results, device, quick, total, ceilings))
    print(f"\nsuite took {total:.0f} s; wrote {stem}.json, {stem}.md")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n\n")[0])
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
