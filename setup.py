"""Build script for the native extension ``finegrained_ops._C``.

Install with ``pip install --no-build-isolation -e .`` into an environment that already has
the torch you will run with: the extension is compiled against that torch's headers and ABI.

Switches (environment variables):
    FINEGRAINED_OPS_FORCE_CUDA=1  build the CUDA kernels even if torch or CUDA_HOME says no
    FINEGRAINED_OPS_FORCE_CPU=1   build the CPU kernels only
    TORCH_CUDA_ARCH_LIST          CUDA architectures; unset: those of the visible GPUs, or
                                  PORTABLE_CUDA_ARCHS when none is visible (see README)
    FINEGRAINED_OPS_SANITIZE_FLAGS  extra compile and link flags of the C++ code
                                  (tools/sanitize.py: -fsanitize=address,undefined ...)
"""
import glob
import os
import re
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - exercised only on a broken install
    sys.exit(
        "finegrained_ops: the build cannot import torch. If torch is installed, pip's build "
        "isolation hides it (it builds in a fresh environment): run `pip install "
        "--no-build-isolation .` (or `-e .`). Otherwise `pip install torch` first. Isolation "
        "would compile against a different torch than the one you run with."
    )

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"  # setuptools wants source paths relative to setup.py


def read_version():
    with open(os.path.join(ROOT, "finegrained_ops", "version.py")) as f:
        return re.search(r'__version__ = "([^"]+)"', f.read()).group(1)


def flag(name):
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def cuda_decision():
    """(build_cuda, reason): decided by torch.version.cuda and CUDA_HOME, not by a visible GPU."""
    if flag("FINEGRAINED_OPS_FORCE_CPU"):
        return False, "FINEGRAINED_OPS_FORCE_CPU=1"
    if flag("FINEGRAINED_OPS_FORCE_CUDA"):
        if CUDA_HOME is None:
            sys.exit("finegrained_ops: FINEGRAINED_OPS_FORCE_CUDA=1 but no CUDA toolkit was found "
                     "(set CUDA_HOME).")
        return True, "FINEGRAINED_OPS_FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if CUDA_HOME is None:
        return False, f"torch has CUDA {torch.version.cuda} but no CUDA toolkit (CUDA_HOME) was found"
    return True, f"torch has CUDA {torch.version.cuda} and CUDA_HOME={CUDA_HOME}"


# Built when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible (a build machine, a container
# image): T4, A100, A10/RTX 30xx, L4/RTX 40xx, H100/H200, and Hopper PTX that the driver
# compiles for newer GPUs at first use.
PORTABLE_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"


def cuda_arch_list():
    """(TORCH_CUDA_ARCH_LIST to build for, where it came from).

    As torch's extension builder: the user's list, else the visible GPUs' architectures
    (capped at the newest one torch was built for) with PTX of the newest; unlike it, a
    portable list rather than an error when no GPU is visible.
    """
    chosen = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if chosen:
        return chosen, "TORCH_CUDA_ARCH_LIST"
    if not torch.cuda.is_available():
        return PORTABLE_CUDA_ARCHS, "no visible GPU: the portable list"
    built = [divmod(int(m.group(1)), 10) for a in torch.cuda.get_arch_list()
             if (m := re.fullmatch(r"sm_(\d+)\w*", a))]
    newest = max(built, default=(99, 9))
    visible = sorted({min(tuple(torch.cuda.get_device_capability(i)), newest)
                      for i in range(torch.cuda.device_count())})
    return ";".join(f"{major}.{minor}" for major, minor in visible) + "+PTX", "the visible GPUs"


# Floating-point contraction is off in every build (docs/semantics.md, "Floating point"): a
# multiply and an add are rounded as written, on the CPU (GCC contracts by default once -mfma
# is on), in CUDA (nvcc contracts by default) and in the CUDA emulation, so the three round
# alike and a kernel that needs an FMA writes fma().
FP_CONTRACTION_FLAGS = {"cxx": ["-ffp-contract=off"], "nvcc": ["--fmad=false"]}


def torch_uses_openmp():
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


def cpu_simd_flags():
    """AVX2 + FMA (+ F16C) for at::vec::Vectorized (Sleef exp/log1p) when the build machine
    has them.

    FINEGRAINED_OPS_CPU_CAPABILITY=DEFAULT builds portable scalar-fallback kernels instead.
    """
    wanted = os.environ.get("FINEGRAINED_OPS_CPU_CAPABILITY", "AVX2").upper()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    if wanted == "AVX2" and {"avx2", "fma", "f16c"} <= set(flags):
        # -mf16c: at::vec's float16 conversions (the half-precision losses read float16 rows)
        return ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    return []


def extension():
    build_cuda, reason = cuda_decision()
    os.chdir(ROOT)
    sources = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    define_macros = [
        ("FGO_VERSION", f'"{read_version()}"'),
        ("FGO_TORCH_VERSION", f'"{torch.__version__}"'),
    ]
    sanitize = os.environ.get("FINEGRAINED_OPS_SANITIZE_FLAGS", "").split()
    # torch adds the C++ standard its headers need. -g0 undoes the -g of Python's CFLAGS: the
    # debug info made the library 36 MB instead of 1 and its build slower (the sanitizer build
    # asks for line tables again, after it).
    cxx_flags = ["-O3", "-g0"] + FP_CONTRACTION_FLAGS["cxx"] + cpu_simd_flags() + sanitize
    link_flags = list(sanitize)
    if torch_uses_openmp():
        # at::parallel_for is an inline `#pragma omp parallel`: without -fopenmp it runs serially.
        cxx_flags.append("-fopenmp")
        link_flags.append("-fopenmp")
    if build_cuda:
        archs, origin = cuda_arch_list()
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))
        define_macros += [("WITH_CUDA", None),
                          ("FGO_CUDA_ARCH_LIST", f'"{archs}"')]
        print(f"finegrained_ops: building CPU + CUDA kernels ({reason}), "
              f"TORCH_CUDA_ARCH_LIST={archs} ({origin})", file=sys.stderr)
        return CUDAExtension(
            "finegrained_ops._C", sources, include_dirs=[os.path.join(ROOT, CSRC)], define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3"] + FP_CONTRACTION_FLAGS["nvcc"]},
            extra_link_args=link_flags)
    print(f"finegrained_ops: building CPU kernels only ({reason})", file=sys.stderr)
    return CppExtension(
        "finegrained_ops._C", sources, include_dirs=[os.path.join(ROOT, CSRC)], define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)


def requirements():
    """The hard runtime dependencies, torch and numpy (the optional ones are pyproject's
    extras); torch pinned to the release this build was compiled against, the only one whose
    ABI the binary imports under (2.5 is the oldest the sources support)."""
    return [f"torch=={torch.__version__.split('+')[0]}", "numpy"]


if __name__ == "__main__":  # importable, for the tests of the build decisions
    setup(
        version=read_version(),
        install_requires=requirements(),
        packages=find_packages(include=["finegrained_ops", "finegrained_ops.*"]),
        package_data={"finegrained_ops": ["py.typed"]},  # PEP 561: the package is typed
        ext_modules=[extension()],
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    )
