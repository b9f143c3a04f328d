"""Type aliases of the public signatures (the package ships py.typed)."""
from typing import Sequence, Union

import torch

# Samples per class (C,): a tensor or any sequence of numbers.
Counts = Union[torch.Tensor, Sequence[float]]
# Where a tensor goes: a torch.device, its name ('cuda:0'), or None for the default.
DeviceLike = Union[torch.device, str, None]
