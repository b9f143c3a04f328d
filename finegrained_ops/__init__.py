"""finegrained_ops: native PyTorch operators for fine-grained and long-tailed recognition.

Importing the package loads the compiled extension; a missing build is a loud ImportError.
"""
from . import _native
from ._native import BUILD_INFO
from .version import __version__

__all__ = ["BUILD_INFO", "__version__"]
