"""py.typed ships, and a user script of the README's examples passes mypy against the
package's annotations (torch itself is not analysed: it would take minutes; its types are Any
here, so the check is of our signatures: argument names, counts and kinds, return types)."""
import subprocess
import sys
from pathlib import Path

import pytest

import finegrained_ops

SCRIPT = Path(__file__).parent / "mypy_examples" / "readme_examples.py"
CONFIG = """
[mypy]
python_version = 3.11
[mypy-finegrained_ops.*]
ignore_errors = True
[mypy-torch.*,numpy.*,scipy.*,ot.*,sklearn.*,tqdm.*,matplotlib.*,PIL.*]
follow_imports = skip
follow_imports_for_stubs = True
ignore_missing_imports = True
"""


def test_the_package_is_marked_typed():
    assert (Path(finegrained_ops.__file__).parent / "py.typed").is_file()


def test_mypy_accepts_the_readme_examples(tmp_path):
    pytest.importorskip("mypy")
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", config, "--cache-dir",
         tmp_path / "cache", "--no-error-summary", SCRIPT], capture_output=True, text=True,
        timeout=600, cwd=Path(finegrained_ops.__file__).parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
