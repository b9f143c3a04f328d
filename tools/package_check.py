"""`make package-check`: the sdist builds in a fresh environment, and the wheel built from it
says what it holds and installs from its own metadata.

1. Builds the sdist into build/package/ and checks that it holds what a build and the tests
   need (every csrc/ header and CUDA source, the tests with the CUDA emulation, docs/, LICENSE):
   the sdist once held only the .cpp files and could not be built.
2. Creates a fresh virtual environment holding only what the README tells a user to install
   first (this environment's torch release and numpy) and pyproject's build requirements, and
   builds a wheel from the sdist alone there (pip, no build isolation), as a user would.
3. Checks the wheel: torch pinned to the release it was compiled against (a binary imports
   under that torch only), the extension without debug info, LICENSE in its metadata, and
   py.typed.
4. Installs the wheel into that environment with pip resolving its declared dependencies
   (torch and numpy only: no optional one may arrive), and runs a smoke test there, outside the
   source tree: the package imported is the wheel's, its ops run, and a call that needs an
   extra says which.
"""
import email
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import torch

from finegrained_ops._optional import OPTIONAL

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "package"
# The largest extension we expect without debug info (it is about 1 MB; 36 MB with it).
MAX_EXTENSION_BYTES = 8 << 20


def run(cmd):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def tracked(*patterns):
    """The repository's tracked files matching the git pathspecs `patterns`."""
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return set(out.split())


def check_sdist(sdist):
    with tarfile.open(sdist) as archive:
        held = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    needed = tracked("csrc", "tests/*.py", "tests/cuda_emulation", "docs") | {"LICENSE"}
    missing = sorted(needed - held)
    if missing:
        sys.exit(f"package-check: the sdist {sdist.name} lacks {len(missing)} files a build or "
                 f"the tests need (MANIFEST.in): {missing[:10]}")
    print(f"package-check: {sdist.name} holds all {len(needed)} source, test and doc files")


def torch_release():
    return torch.__version__.split("+")[0]


def check_wheel(wheel):
    release = torch_release()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(metadata_name))
        extensions = [archive.getinfo(n) for n in names if Path(n).name.startswith("_C")]
        licenses = [n for n in names if ".dist-info/" in n and "LICENSE" in n]
        typed = "finegrained_ops/py.typed" in names
    torch_requirements = [r for r in metadata.get_all("Requires-Dist", [])
                          if r.split(";")[0].strip().startswith("torch")]
    problems = []
    if torch_requirements != [f"torch=={release}"]:
        problems.append(f"Requires-Dist for torch is {torch_requirements}, expected "
                        f"['torch=={release}'] (the release the extension was compiled against)")
    if len(extensions) != 1:
        problems.append(f"expected one extension _C*.so, found {[e.filename for e in extensions]}")
    elif extensions[0].file_size > MAX_EXTENSION_BYTES:
        problems.append(f"{extensions[0].filename} is {extensions[0].file_size >> 20} MB: built "
                        "with debug info?")
    if not licenses:
        problems.append("no LICENSE in the wheel's metadata")
    if not typed:
        problems.append("no finegrained_ops/py.typed (PEP 561)")
    if problems:
        sys.exit("package-check: the wheel " + wheel.name + ":\n  " + "\n  ".join(problems))
    size = extensions[0].file_size / (1 << 20)
    print(f"package-check: {wheel.name}: torch=={release}, extension {size:.1f} MB, LICENSE, "
          "py.typed")


SMOKE = """
import sys
import torch
import finegrained_ops as fo
assert fo.__file__.startswith(sys.prefix), f"imported {fo.__file__}, not the wheel's"
logits = torch.randn(8, 5, requires_grad=True)
fo.class_balanced_loss(logits, torch.arange(8) % 5, [50, 20, 9, 4, 2]).backward()
maps = torch.randn(2, 8, 3, 3, requires_grad=True)
fo.nn.KernelPooling(8, 16, order=3)(maps).sum().backward()
emb = torch.randn(16, 4, requires_grad=True)
fo.triplet_margin_loss(emb, torch.arange(16) % 4).backward()
assert all(t.grad is not None and bool(t.grad.isfinite().all()) for t in (logits, maps, emb))
try:
    fo.retrieval.diffusion_rerank(emb.detach(), emb.detach(), k=3)
    raise AssertionError("diffusion_rerank ran without scipy")
except ImportError as e:
    assert "finegrained_ops[metrics]" in str(e), e
print("package-check: the installed wheel runs", fo.__version__, "from", fo.__file__)
"""


def build_requirements():
    """pyproject's [build-system] requires (read without tomllib, which Python 3.9 and 3.10,
    which the package supports, lack)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[build-system]", 1)[1].split("\n[", 1)[0]
    listed = re.search(r"^requires\s*=\s*\[(.*?)\]", section, re.M | re.S).group(1)
    return re.findall(r'"([^"]+)"', listed)


def fresh_environment(scratch):
    """A venv with this environment's torch release, numpy and the build requirements only."""
    venv = Path(scratch) / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    build_requires = build_requirements()
    run([python, "-m", "pip", "install", "-q", f"torch=={torch_release()}", "numpy",
         *build_requires])
    return venv


def smoke_test(venv, wheel, scratch):
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", wheel])
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True,
                               capture_output=True, text=True).stdout.lower()
    optional = [d for d, _ in OPTIONAL.values() if f"\n{d.lower()}==" in "\n" + installed]
    if optional:
        sys.exit(f"package-check: installing the wheel pulled in optional dependencies "
                 f"{optional}: they belong in extras")
    subprocess.run([python, "-c", SMOKE], cwd=scratch, check=True)
    run([venv / "bin" / "finegrained-ops", "--version"])


def main():
    for old in OUT.glob("finegrained_ops-*"):
        old.unlink()
    run([sys.executable, "setup.py", "-q", "sdist", "--dist-dir", OUT])
    sdist = next(OUT.glob("finegrained_ops-*.tar.gz"))
    check_sdist(sdist)
    with tempfile.TemporaryDirectory() as scratch:
        venv = fresh_environment(scratch)
        run([venv / "bin" / "python", "-m", "pip", "wheel", "-q", "--no-build-isolation",
             "--no-deps", "--wheel-dir", OUT, sdist])
        wheel = next(OUT.glob("finegrained_ops-*.whl"))
        check_wheel(wheel)
        smoke_test(venv, wheel, scratch)


if __name__ == "__main__":
    main()
