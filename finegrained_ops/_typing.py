"""Type aliases of the public signatures (the package ships py.typed)."""
from typing import Sequence, Union

import numpy as np
import torch

# Samples per class (C,): a tensor, an array or any sequence of numbers.
Counts = Union[torch.Tensor, np.ndarray, Sequence[float]]
# Class indices (N,): a tensor, an array or any sequence of ints (normalised to int64).
Labels = Union[torch.Tensor, np.ndarray, Sequence[int]]
# Where a tensor goes: a torch.device, its name ('cuda:0'), or None for the default.
DeviceLike = Union[torch.device, str, None]
