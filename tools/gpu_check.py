"""The GPU validation run in one call: build, CUDA tests, CUDA-vs-CPU smoke, host overhead per
call, compute-sanitizer, GPU benchmark; every log and a one-screen summary under OUT.

    make gpu-check OUT=dir [DRY_RUN=1]         (python tools/gpu_check.py --out dir [--dry-run])

Meant for a GPU machine with a CUDA torch, nvcc, compute-sanitizer, pytest and hypothesis and no
network: it builds in place (`python setup.py build_ext --inplace`, no pip resolve, CUDA
forced) and installs the optional test wheels from .whl/ when that folder exists (POT and
pytorch-metric-learning, with --target into build/gpu-check-site; their tests skip without
them). Without --dry-run a machine where torch sees no GPU fails the run. With --dry-run, on
a machine without a GPU, every step that needs none runs (the build, info, test collection,
the smoke comparison's harness on the CPU) and the others are reported as skipped. Steps
share a time budget (default 9 minutes) and each has its own cap, so a hung kernel costs one
step, not the run; the exit status is 1 if any step failed. --bench full runs the whole GPU
benchmark suite instead of its --quick sizes.
"""
import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


SITE = os.path.join(ROOT, "build", "gpu-check-site")  # the .whl/ wheels, installed with --target


def gpu_visible(python):
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([python, "-c", probe], cwd=ROOT).returncode == 0


def find_sanitizer():
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return shutil.which("compute-sanitizer") or shutil.which(
        "compute-sanitizer", path=os.path.join(cuda_home, "bin"))


def steps(python, out, have_gpu, dry_run, bench):
    """(name, command or None, why skipped, extra environment, cap in seconds) in order."""
    sanitizer = find_sanitizer()
    wheels = sorted(glob.glob(os.path.join(ROOT, ".whl", "*.whl")))
    no_gpu = "no GPU (dry run)" if dry_run else "no GPU"
    smoke = [python, "tools/gpu_smoke.py"]
    tiny = smoke + ["--scale", "tiny"]
    yield ("wheels", [python, "-m", "pip", "install", "--no-index", "--no-deps", "--upgrade",
                      "--target", SITE, *wheels] if wheels and not dry_run else None,
           "dry run: the local environment is left alone" if dry_run else "no .whl/ folder", {}, 60)
    # A GPU machine must build the CUDA kernels: a missing toolkit fails here, not later.
    yield ("build", [python, "setup.py", "build_ext", "--inplace"], "",
           {"FINEGRAINED_OPS_FORCE_CUDA": "1"} if have_gpu else {}, 300)
    yield "info", [python, "-m", "finegrained_ops", "info"], "", {}, 60
    # Every test that takes the `device` fixture has "cuda" in its id; the emulation's tests
    # are CPU tests and ran in `make test`.
    # pytest-xdist, where installed, spreads the tests over 4 processes sharing the GPU.
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") else []
    yield ("cuda tests", [python, "-m", "pytest", "-q", "-rs", *workers, "-k",
                          "cuda and not test_cuda_emulation", "tests"], "", {}, 240)
    yield ("smoke cuda vs cpu", smoke + ["--device", "cuda"] if have_gpu else None, no_gpu, {},
           90)
    if not have_gpu:
        yield "smoke harness (cpu vs cpu)", tiny + ["--device", "cpu"], "", {}, 90
    yield ("host overhead", [python, "-m", "benchmarks.host_overhead", "--device",
                             "cuda" if have_gpu else "cpu", "--steps", "500"], "", {}, 60)
    for tool in ("memcheck", "racecheck"):
        command = [sanitizer, "--tool", tool, "--error-exitcode", "1", *tiny]
        # Without the caching allocator every tensor is its own allocation, so an access past
        # its end is outside any allocation and memcheck sees it.
        yield (f"compute-sanitizer {tool}", command if have_gpu and sanitizer else None,
               no_gpu if not have_gpu else "compute-sanitizer not found (PATH, CUDA_HOME/bin)",
               {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}, 120)
    size = [] if bench == "full" else ["--quick"]
    yield (f"bench --device cuda {' '.join(size)}".strip(),
           [python, "-m", "finegrained_ops", "bench", "--device", "cuda", *size, "--out",
            os.path.join(out, "bench")] if have_gpu else None, no_gpu, {}, 300)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the logs and summary.md")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: skip what needs one")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all steps")
    parser.add_argument("--bench", choices=("quick", "full"), default="quick",
                        help="benchmark sizes (default quick)")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    have_gpu = not args.dry_run and gpu_visible(args.python)
    deadline = time.monotonic() + args.budget
    rows, failed = [], False
    if not args.dry_run and not have_gpu:
        rows.append(("GPU", "FAILED (torch sees no CUDA device)", 0.0, "not a dry run"))
        failed = True
    path = os.pathsep.join([ROOT, SITE, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name, command, why, env, cap in steps(args.python, out, have_gpu, args.dry_run,
                                              args.bench):
        log = os.path.join(out, re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".log")
        if command is None:
            rows.append((name, "skipped", 0.0, why))
            failed |= not args.dry_run and name != "wheels"
            continue
        left = deadline - time.monotonic()
        if left < 5:
            rows.append((name, "skipped", 0.0, "time budget spent"))
            failed = True
            continue
        print(f"== {name}: {' '.join(command)}", flush=True)
        started = time.monotonic()
        with open(log, "w") as f:
            f.write(" ".join(command) + "\n\n")
            f.flush()
            try:
                code = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=min(left, cap),
                                      env={**os.environ, "PYTHONPATH": path, **env}).returncode
                status = "passed" if code == 0 else f"FAILED (exit {code})"
            except subprocess.TimeoutExpired:
                status = f"FAILED (over {min(left, cap):.0f} s)"
        failed |= status != "passed"
        rows.append((name, status, time.monotonic() - started, os.path.relpath(log, out)))
    summary = ["| step | result | seconds | log / why |", "|---|---|---|---|"]
    summary += [f"| {n} | {s} | {t:.0f} | {w} |" for n, s, t, w in rows]
    text = (f"# gpu-check {'(dry run) ' if args.dry_run else ''}"
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n" + "\n".join(summary) + "\n")
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
