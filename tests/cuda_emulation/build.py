"""Builds the CUDA emulation: the real CUDA launchers and kernels of csrc/, compiled as host C++.

Every ``.cu``/``.cuh`` file of csrc/ is copied to build/cuda-emulation/src/ with three
mechanical rewrites and nothing else changed (``#line`` and kept line counts point compiler
messages at csrc/):

- ``kernel<<<grid, block, shared, stream>>>(args)`` becomes
  ``::fgo::emu::launch("kernel", ::fgo::emu::LaunchConfig(grid, block, shared, stream),
  [&](auto... a) { kernel(a...); }, args)``: the arguments are evaluated once;
- ``__shared__ T name[n];`` becomes a function-local static that the emulator poisons at the
  start of every block and counts against the 48 KiB limit;
- ``extern __shared__ T name[];`` becomes a pointer to the launch's dynamic shared memory.

They are compiled against torch's CPU headers with the shim in shim/ (cuda_runtime.h, the
c10/cuda headers) and the emulator (emulator.cpp), together with the ops' device-independent
entry points, into one extension module whose entry points run the CUDA path
(``FGO_CUDA_EMULATION``, see csrc/common/device.h) on CPU tensors; ``emulate(True)`` puts the
ops' device kernels, so compiled, in place of their CPU kernels. The module also binds the
emulator's controls and its self-test kernels (module.cpp). See docs/cuda_emulation.md.
"""
import os
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"
# make sanitize (tools/sanitize.py) builds a separate copy with the sanitizers.
SANITIZE_FLAGS = os.environ.get("FINEGRAINED_OPS_SANITIZE_FLAGS", "").split()
BUILD = ROOT / "build" / ("sanitize/cuda-emulation" if SANITIZE_FLAGS else "cuda-emulation")
NAME = "finegrained_ops_cuda_emulation" + ("_sanitized" if SANITIZE_FLAGS else "")
# Small kernel-pooling chunks, so that the emulation's shapes span several chunks.
KP_CHUNK_SCALARS = 4096

_DYNAMIC_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?"
                             r"([A-Za-z_][\w:<>, ]*?)\s+(\w+)\s*\[\s*\]\s*;")
_STATIC_SHARED = re.compile(r"__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?"
                            r"([A-Za-z_][\w:<>, ]*?)\s+(\w+)((?:\s*\[[^\];]*\])*)\s*;")


def _matching(text, i, opening, closing):
    """Index of the bracket that closes the one at text[i]."""
    depth = 0
    for j in range(i, len(text)):
        depth += (text[j] == opening) - (text[j] == closing)
        if depth == 0:
            return j
    raise ValueError(f"unbalanced {opening!r} at offset {i}")


def _kernel_start(text, launch):
    """Start of the kernel expression (name, optional template arguments) before `<<<`."""
    j = launch
    if text[j - 1] == ">":
        depth = 0
        while True:
            j -= 1
            if j < 0:
                raise ValueError(f"unbalanced template arguments before a launch at {launch}")
            depth += (text[j] == ">") - (text[j] == "<")
            if depth == 0:
                break
    while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_:"):
        j -= 1
    return j


def transform(text):
    """The emulation's version of a CUDA source: launches and shared memory rewritten, with the
    line count of every statement kept."""
    out, pos = [], 0
    while (launch := text.find("<<<", pos)) != -1:
        line_start = text.rfind("\n", 0, launch) + 1
        if "//" in text[line_start:launch]:  # in a comment
            out.append(text[pos:launch + 3])
            pos = launch + 3
            continue
        start = _kernel_start(text, launch)
        config_end = text.index(">>>", launch)
        args_open = config_end + 3
        while text[args_open].isspace():
            args_open += 1
        if text[args_open] != "(":
            raise ValueError(f"no argument list after a launch at offset {launch}")
        args_close = _matching(text, args_open, "(", ")")
        kernel = text[start:launch].strip()
        config, args = text[launch + 3:config_end], text[args_open + 1:args_close]
        rewritten = (f'::fgo::emu::launch("{kernel}", ::fgo::emu::LaunchConfig({config}), '
                     f"[&](auto... fgo_emu_args) {{ {kernel}(fgo_emu_args...); }}"
                     + (f", {args})" if args.strip() else ")"))
        out.append(text[pos:start] + rewritten)
        out.append("\n" * (text.count("\n", start, args_close) - rewritten.count("\n")))
        pos = args_close + 1
    out.append(text[pos:])
    text = _DYNAMIC_SHARED.sub(r"\1* const \2 = static_cast<\1*>(::fgo::emu::dynamic_shared());",
                               "".join(out))
    return _STATIC_SHARED.sub(r"static \1 \2\3; ::fgo::emu::shared_variable(&\2, sizeof(\2));",
                              text)


def _write_if_changed(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _emulated_sources():
    """Transformed copies of the CUDA sources: the .cu files, compiled as .cpp."""
    sources = []
    for original in sorted([*CSRC.rglob("*.cu"), *CSRC.rglob("*.cuh"), *HERE.glob("*.cu")]):
        base = CSRC if original.is_relative_to(CSRC) else HERE
        copy = BUILD / "src" / original.relative_to(base)
        if original.suffix == ".cu":
            copy = copy.with_suffix(".cpp")
            sources.append(copy)
        _write_if_changed(copy, f'#line 1 "{original}"\n' + transform(original.read_text()))
    return sources


def _fp_contraction_flags():
    """The host compiler's contraction policy of the real build (setup.py's), so the emulated
    kernels round as the CPU and CUDA builds do."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("finegrained_ops_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # setup() itself runs only as __main__
    return setup.FP_CONTRACTION_FLAGS["cxx"]


def compiler_available():
    return shutil.which(os.environ.get("CXX", "c++")) is not None


def load(verbose=False):
    """Compile (incrementally, with ninja) and import the emulation module."""
    from torch.utils.cpp_extension import load as load_extension

    # Not the CPU kernels, the module or its Python bindings. The <op>_op.cpp files contribute
    # their device kernels only (csrc/common/device_kernels.h): the emulation's module loads
    # beside the real one, and an op is defined once per process.
    entry_points = [p for p in sorted(CSRC.rglob("*.cpp"))
                    if not p.name.endswith("_cpu.cpp")
                    and p.name not in ("module.cpp", "bindings.cpp")]
    (BUILD / "obj").mkdir(parents=True, exist_ok=True)
    return load_extension(
        name=NAME,
        sources=[str(p) for p in [*entry_points, *_emulated_sources(), HERE / "emulator.cpp",
                                  HERE / "module.cpp"]],
        extra_include_paths=[str(HERE / "shim"), str(HERE), str(BUILD / "src"), str(CSRC)],
        extra_cflags=["-O1", *_fp_contraction_flags(), "-DWITH_CUDA", "-DFGO_CUDA_EMULATION",
                      f"-DFGO_KP_CUDA_CHUNK_SCALARS={KP_CHUNK_SCALARS}",
                      '-DFGO_VERSION=\\"emulated\\"', '-DFGO_TORCH_VERSION=\\"emulated\\"',
                      '-DFGO_CUDA_ARCH_LIST=\\"emulated\\"', *SANITIZE_FLAGS],
        extra_ldflags=SANITIZE_FLAGS,
        build_directory=str(BUILD / "obj"),
        verbose=verbose,
    )
