"""The optional dependencies. torch and numpy are the only ones `pip install finegrained_ops`
installs; the few calls that need more import it through :func:`require`, which names the
extra that installs it (README, Installation). `import finegrained_ops` imports none of them.
"""
import importlib
from types import ModuleType
from typing import Optional

# Top-level module -> (its distribution on PyPI, the extra of finegrained_ops that installs it).
OPTIONAL = {
    "scipy": ("scipy", "metrics"),
    "ot": ("POT", "metrics"),
    "PIL": ("pillow", "data"),
    "sklearn": ("scikit-learn", "data"),
    "tqdm": ("tqdm", "progress"),
    "matplotlib": ("matplotlib", "demo"),
}


def require(module: str, needed_by: str, *, extra: Optional[str] = None) -> ModuleType:
    """`module` (e.g. 'scipy.sparse.linalg') imported, or an ImportError naming the extra that
    installs it (`extra`, when the caller needs several of them: the demo); needed_by names
    the call that needs it, for the message."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        distribution, module_extra = OPTIONAL[module.split(".")[0]]
        extra = extra or module_extra
        raise ImportError(
            f"{needed_by} needs {distribution}, an optional dependency of finegrained_ops: "
            f"pip install 'finegrained_ops[{extra}]' (or [all])") from e
