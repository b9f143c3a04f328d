"""Command line: ``python -m finegrained_ops info | demo | bench`` (or ``finegrained-ops``)."""
import argparse
import os
import platform
import sys


def cmd_info(args) -> int:
    import torch

    import finegrained_ops
    from finegrained_ops._native import BUILD_INFO, NATIVE_OPS, _C

    b = BUILD_INFO
    backend = f"CUDA {b['cuda_version']} (arch {b['cuda_arch_list']})" if b["with_cuda"] else "CPU only"
    rows = [
        ("finegrained_ops", finegrained_ops.__version__),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (extension built against {b['torch_version']})"),
        ("native build", f"{backend}: {_C.__file__}"),
        ("CPU kernels", f"{b['cpu_capability']} (this CPU: "
                        f"{torch.backends.cpu.get_cpu_capability()})"),
        ("OpenMP", f"{'yes' if b['with_openmp'] else 'no'}, {b['num_threads']} threads"),
        ("CUDA device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none"),
        ("native ops", ", ".join(NATIVE_OPS) or "none yet"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def cmd_demo(args) -> int:
    from finegrained_ops.demo import run_demo

    path = run_demo(args.out, quick=args.quick)
    print(f"\nreport: {path}")
    return 0


def cmd_bench(args) -> int:
    """The suite is the source repository's `benchmarks` package (it compares against peer
    libraries that are not dependencies of finegrained_ops), so it runs from a checkout: this
    is `python -m benchmarks` with the checkout found next to the package. Installed without a
    checkout, it says so and exits with status 2."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, "benchmarks", "suite.py")):
        print("finegrained_ops bench: the benchmark suite ships with the source repository, not "
              "with the installed package; clone the repository and run `python -m benchmarks` "
              "(or this command) from an editable install (pip install -e .)", file=sys.stderr)
        return 2
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.suite import main as suite_main

    return suite_main(args.bench_args)


def program_name():
    """How the user called us: `python -m finegrained_ops` or the console script's name."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m finegrained_ops" if name in ("", "__main__.py", "-c") else name


def main(argv=None) -> int:
    from finegrained_ops.version import __version__

    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__)
    parser.add_argument("--version", action="version", version=f"finegrained_ops {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and the native build").set_defaults(run=cmd_info)
    demo = sub.add_parser("demo", help="the papers' effects reproduced on bundled data (CPU)")
    demo.add_argument("--quick", action="store_true", help="short training: a smoke run")
    demo.add_argument("--out", default="demo-report", help="report directory (default: %(default)s)")
    demo.set_defaults(run=cmd_demo)
    bench = sub.add_parser("bench", add_help=False,
                           help="benchmark suite: [--ops ...] [--device cpu|cuda] [--quick] "
                                "[--out DIR] (see --help)")
    bench.set_defaults(run=cmd_bench)
    args, rest = parser.parse_known_args(argv)
    if args.command != "bench" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.bench_args = rest
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
