"""Command line: ``python -m finegrained_ops info | demo | bench``."""
import argparse
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
        ("OpenMP", f"{'yes' if b['with_openmp'] else 'no'}, {b['num_threads']} threads"),
        ("CUDA device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none"),
        ("native ops", ", ".join(NATIVE_OPS) or "none yet"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def not_built(what: str, issue: str):
    def run(args) -> int:
        print(f"finegrained_ops {what}: not built yet ({issue}); nothing was run.", file=sys.stderr)
        return 2
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finegrained_ops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions and the native build").set_defaults(run=cmd_info)
    sub.add_parser("demo", help="end-to-end run on bundled data").set_defaults(
        run=not_built("demo", "the training/demo issue"))
    sub.add_parser("bench", help="benchmark suite").set_defaults(
        run=not_built("bench", "the benchmark-suite issue"))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
