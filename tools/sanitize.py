"""`make sanitize`: the native code under AddressSanitizer + UndefinedBehaviorSanitizer.

1. Builds the extension with FLAGS into build/sanitize/ (never the normal in-place build)
   and lays out, in build/sanitize/site/, a copy of the Python package around it and of the
   tests (pytest puts the tests' root first on sys.path, so they must sit beside the copy),
   with csrc/ and setup.py linked for the emulation's build.
2. Runs the selected tests there (SELECTION), with the sanitizer runtime preloaded
   (Python and torch are not instrumented), leak detection off (CPython keeps objects alive
   to exit by design), and every report logged to build/sanitize/reports/. The CUDA emulation
   is rebuilt with the same flags (tests/cuda_emulation/build.py reads them), so the CUDA
   kernels run under the sanitizers too.
3. Fails when pytest fails or when a report's stack touches our code (csrc/ or the
   emulator); reports entirely inside torch or Python are printed, not failed.

Hypothesis runs the 'sanitize' profile (tests/conftest.py: 8 examples), and the slowest CUDA
emulation cases (DESELECTED) are left out, to keep CI short.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.registry import sanitized_test_modules  # noqa: E402

OUT = ROOT / "build" / "sanitize"
# -g1: line tables for the reports' stacks, at a fraction of -g's compile time; -O0 (last
# wins over the build's -O3): the builds dominate this run's time on CI's two cores.
FLAGS = ("-fsanitize=address,undefined -fsanitize-recover=address,undefined "
         "-fno-omit-frame-pointer -g1 -O0")
# The registry's suites (every public op through the fuzz tests: all dtypes, layouts, bad
# values; the CUDA kernels in the emulation) and each registered op's own test module, there
# only the tests that reach native code with unusual input (the native entry points called
# directly with bad values, edge cases); the op modules' other tests (hypothesis against the
# reference, gradcheck) run in `make test`. tests/registry.py names the modules, so a new op's
# tests are sanitized once it is registered.
SELECTION = "test_fuzz or test_cuda_emulation or native or bad_input or refuse or edge or empty"
# The slowest emulation cases under the sanitizers (10-250 s each there: the fibers switch on
# every shuffle): the same kernels and paths run in the smaller cases kept (the triplet loss at
# B = 300 for every rule, mining with 'hardest', bank mining with per-anchor draws over several
# chunks of a bank of 60).
DESELECTED = [f"tests/test_cuda_emulation.py::{case}" for case in (
    "test_triplet_ties_and_many_positives", "test_triplet_loss[517",
    "test_bank_mining[None-None-400]", "test_bank_mining[3-50-400]",
    "test_bank_mining[1-7-160]",
    "test_triplet_mining_all_and_sampled[violating]",
    "test_triplet_mining_all_and_sampled[semihard]", "test_triplet_mining_all_and_sampled[all]",
    "test_confident_rows_are_exact_and_nonnegative[ldam_loss-30.0-520]",
    "test_confident_rows_are_exact_and_nonnegative[ldam_loss-64.0-520]")] + [
    # pure PyTorch and torch.compile (tens of seconds under the sanitizers, none in our code)
    "tests/test_global_descriptors.py::"
    "test_isqrt_cov_compiles_works_under_torch_func_and_refuses_double_backward"]
OUR_CODE = re.compile(r"/csrc/|/cuda_emulation/|cuda-emulation/|fgo::")


def run(cmd, cwd=ROOT, **kwargs):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=cwd, **kwargs)


def build(env):
    """build/sanitize/site/: the package with the sanitized extension, the tests, csrc/."""
    lib = OUT / "lib"
    result = run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", lib,
                  "--build-temp", OUT / "temp"], env=env)
    if result.returncode:
        sys.exit("sanitize: the sanitized build failed")
    site = OUT / "site"
    for name in ("finegrained_ops", "tests"):
        shutil.rmtree(site / name, ignore_errors=True)
        shutil.copytree(ROOT / name, site / name,
                        ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    for extension in (lib / "finegrained_ops").glob("_C*.so"):
        shutil.copy2(extension, site / "finegrained_ops")
    for name in ("csrc", "setup.py"):  # the emulation's build reads setup.py's flags
        if not (site / name).exists():
            (site / name).symlink_to(ROOT / name)
    return site


def runtime(name):
    """The path of the compiler's sanitizer runtime `name` (e.g. libasan.so)."""
    compiler = os.environ.get("CXX", "c++")
    path = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True,
                          text=True).stdout.strip()
    if not os.path.isabs(path):
        sys.exit(f"sanitize: {compiler} has no {name}")
    return path


def reports():
    """(ours, theirs): the logged reports whose stacks touch our code, and the others."""
    ours, theirs = [], []
    for log in sorted((OUT / "reports").glob("*")):
        for report in re.split(r"(?m)^(?===\d+==ERROR|.*runtime error:)", log.read_text()):
            if report.strip():
                (ours if OUR_CODE.search(report) else theirs).append(f"{log.name}:\n{report}")
    return ours, theirs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _, pytest_args = parser.parse_known_args()  # the rest goes to pytest
    start = time.time()
    env = dict(os.environ, FINEGRAINED_OPS_FORCE_CPU="1", FINEGRAINED_OPS_SANITIZE_FLAGS=FLAGS)
    site = build(env)
    shutil.rmtree(OUT / "reports", ignore_errors=True)
    (OUT / "reports").mkdir(parents=True)
    log = OUT / "reports"
    env.update(
        # libstdc++ too: ASan's __cxa_throw interceptor must find it when Python starts
        LD_PRELOAD=" ".join([runtime("libasan.so"), runtime("libstdc++.so")]),
        ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=0:alloc_dealloc_mismatch=0:"
                     f"detect_odr_violation=0:log_path={log}/asan",
        UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=0:log_path={log}/ubsan",
        HYPOTHESIS_PROFILE="sanitize",
    )
    probe = run([sys.executable, "-c", "import finegrained_ops; print(finegrained_ops.__file__)"],
                cwd=site, env=env, capture_output=True, text=True)
    if str(site) not in probe.stdout:
        sys.exit(f"sanitize: the tests would not import the sanitized build: {probe.stdout}"
                 f"{probe.stderr}")
    deselect = [arg for case in DESELECTED for arg in ("--deselect", case)]
    # --rootdir: node ids relative to the copy (tests/...), which DESELECTED names; without it
    # pytest roots them at the repository's pyproject.toml and no deselection matches.
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                 site, *sanitized_test_modules(), "-k", SELECTION, *deselect, *pytest_args],
                cwd=site, env=env)
    ours, theirs = reports()
    for report in theirs:
        print(f"sanitize: report outside our code (not failed):\n{report}")
    for report in ours:
        print(f"sanitize: REPORT IN OUR CODE:\n{report}")
    print(f"sanitize: {len(ours)} report(s) in our code, {len(theirs)} elsewhere, pytest exit "
          f"{tests.returncode}, {time.time() - start:.0f} s")
    sys.exit(1 if ours or tests.returncode else 0)


if __name__ == "__main__":
    main()
