"""py.typed ships, every public signature is annotated, and mypy accepts both the package
and the README's code blocks as a user's script (torch itself is not analysed: it would take
minutes; its types are Any here, so the check is of our signatures and their use: argument
names, counts and kinds, return types)."""
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import finegrained_ops

from .helpers import public_api

README = Path(__file__).parents[1] / "README.md"
CONFIG = """
[mypy]
python_version = 3.11
[mypy-readme_blocks]
check_untyped_defs = True
disable_error_code = name-defined
[mypy-torch.*,numpy.*,scipy.*,ot.*,sklearn.*,tqdm.*,matplotlib.*,PIL.*]
follow_imports = skip
follow_imports_for_stubs = True
ignore_missing_imports = True
"""


def test_the_package_is_marked_typed():
    assert (Path(finegrained_ops.__file__).parent / "py.typed").is_file()


def readme_blocks_script(path):
    """The README's ```python blocks, each the body of a function (their names come from the
    surrounding prose, so undefined names are not errors; calls into the package are)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5, "README's python blocks not found"
    functions = [f"def block_{i}():\n" + "".join(f"    {line}\n" for line in block.splitlines())
                 + "    pass\n" for i, block in enumerate(blocks)]
    path.write_text("\n".join(functions))
    return path


def test_mypy_accepts_the_package_and_the_readme_examples(tmp_path):
    pytest.importorskip("mypy")
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    package = Path(finegrained_ops.__file__).parent
    script = readme_blocks_script(tmp_path / "readme_blocks.py")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", config, "--cache-dir",
         tmp_path / "cache", "--no-error-summary", package, script], capture_output=True,
        text=True, timeout=600, cwd=package.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def _public_callables():
    """(qualified name, function) of every exported function and every public method (and
    __init__ / __call__) of every exported class defined in the package."""
    for qualname, obj in public_api():
        if inspect.isfunction(obj):
            yield qualname, obj
            continue
        for attr, member in vars(obj).items():
            if isinstance(member, property):
                member = member.fget
            public = not attr.startswith("_") or attr in ("__init__", "__call__")
            if public and inspect.isfunction(member):
                yield f"{qualname}.{attr}", member


def test_every_public_signature_is_annotated():
    unannotated = []
    for qualname, fn in _public_callables():
        annotations = fn.__annotations__
        missing = [p.name for p in inspect.signature(fn).parameters.values()
                   if p.name not in ("self", "cls") and p.name not in annotations]
        if "return" not in annotations and fn.__name__ != "__init__":
            missing.append("return")
        if missing:
            unannotated.append(f"{qualname}: {', '.join(missing)}")
    assert not unannotated, "\n".join(unannotated)
