"""`make sanitize`: the native code under AddressSanitizer + UndefinedBehaviorSanitizer.

1. Builds the extension with FLAGS into build/sanitize/ (never the normal in-place build)
   and lays out a copy of the Python package around it in build/sanitize/site/.
2. Runs TESTS against that copy (PYTHONPATH first), with the sanitizer runtime preloaded
   (Python and torch are not instrumented), leak detection off (CPython keeps objects alive
   to exit by design), and every report logged to build/sanitize/reports/. The CUDA emulation
   is rebuilt with the same flags (tests/cuda_emulation/build.py reads them), so the CUDA
   kernels run under the sanitizers too.
3. Fails when pytest fails or when a report's stack touches our code (csrc/ or the
   emulator); reports entirely inside torch or Python are printed, not failed.

Hypothesis runs the 'sanitize' profile (tests/conftest.py: fewer examples) to keep CI short.
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
OUT = ROOT / "build" / "sanitize"
FLAGS = ("-fsanitize=address,undefined -fsanitize-recover=address,undefined "
         "-fno-omit-frame-pointer -g")
TESTS = ["tests/test_kernel_pooling.py", "tests/test_triplet.py",
         "tests/test_class_balanced_loss.py", "tests/test_fuzz.py",
         "tests/test_cuda_emulation.py"]
OUR_CODE = re.compile(r"/csrc/|/tests/cuda_emulation/|build/sanitize/cuda-emulation/")


def run(cmd, **kwargs):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, **kwargs)


def build(env):
    """The sanitized extension, in build/sanitize/site/finegrained_ops/ with the package."""
    lib = OUT / "lib"
    result = run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", lib,
                  "--build-temp", OUT / "temp"], env=env)
    if result.returncode:
        sys.exit("sanitize: the sanitized build failed")
    site = OUT / "site" / "finegrained_ops"
    shutil.rmtree(site, ignore_errors=True)
    shutil.copytree(ROOT / "finegrained_ops", site,
                    ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    for extension in (lib / "finegrained_ops").glob("_C*.so"):
        shutil.copy2(extension, site)
    return site.parent


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
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments")
    args = parser.parse_args()
    start = time.time()
    env = dict(os.environ, FINEGRAINED_OPS_FORCE_CPU="1", FINEGRAINED_OPS_SANITIZE_FLAGS=FLAGS)
    site = build(env)
    shutil.rmtree(OUT / "reports", ignore_errors=True)
    (OUT / "reports").mkdir(parents=True)
    log = OUT / "reports"
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
        LD_PRELOAD=runtime("libasan.so"),
        ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=0:alloc_dealloc_mismatch=0:"
                     f"detect_odr_violation=0:log_path={log}/asan",
        UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=0:log_path={log}/ubsan",
        HYPOTHESIS_PROFILE="sanitize",
    )
    probe = run([sys.executable, "-c", "import finegrained_ops; print(finegrained_ops.__file__)"],
                env=env, capture_output=True, text=True)
    if str(site) not in probe.stdout:
        sys.exit(f"sanitize: the tests would not import the sanitized build: {probe.stdout}"
                 f"{probe.stderr}")
    tests = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS,
                 *args.pytest_args], env=env)
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
