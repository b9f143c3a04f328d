"""Kernel pooling and compact bilinear pooling layers (thesis ch. 3; docs/semantics.md §2)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ..ops.kernel_pooling import (_concat_streams, _kernel_pooling, draw_hashes,
                                  draw_two_input_hashes, estimate_rbf_gamma, rbf_alpha,
                                  sketch_table, two_input_signs)

INPUT_FORMATS = ("NCHW", "NLC")
ALPHAS = ("learned", "rbf", "ones")


class _SketchPooling(nn.Module):
    """Hashes as buffers (and the sketch table the native op reads, built from them once), the
    input layout, and the signed-sqrt + L2 post-processing flag."""

    # What the hashes were drawn for, in the buffer hash_spec: checked when a state dict is
    # loaded (the hashes' shape does not say which sketch_dim they were drawn for); the seed
    # follows.
    SPEC = ("in_channels", "sketch_dim", "order", "y_channels", "seed")

    def __init__(self, in_channels, sketch_dim, order, seed, input_format, sqrt_normalize,
                 hashes=None, y_channels=None):
        super().__init__()
        check_choice("input_format", input_format, INPUT_FORMATS)
        hash_index, hash_sign = hashes or draw_hashes(in_channels, sketch_dim, order, seed=seed)
        # Buffers: saved by state_dict(), moved by .to(); .half() converts the signs only.
        # Every entry of the state dict is a tensor (safetensors, timm's ModelEma).
        self.register_buffer("hash_index", hash_index)
        self.register_buffer("hash_sign", hash_sign)
        self.in_channels, self.sketch_dim = in_channels, sketch_dim
        self.order, self.seed = order, seed
        self.y_channels = y_channels
        self.register_buffer("hash_spec", torch.tensor(self._spec(), dtype=torch.int64))
        self.input_format, self.sqrt_normalize = input_format, sqrt_normalize
        # Derived from the hashes, so not saved: built from the hashes a state dict brings.
        self.register_buffer("sketch_table", self._table(), persistent=False)
        self._loaded_table = None
        self.register_load_state_dict_pre_hook(_check_loaded_hashes)
        self.register_load_state_dict_post_hook(_use_loaded_table)

    def _spec(self):
        """(in_channels, sketch_dim, order, y_channels (0: one input), seed): hash_spec's
        values."""
        return [self.in_channels, self.sketch_dim, self.order, self.y_channels or 0, self.seed]

    def _signs(self, hash_sign):
        """The signs the sketches read (two-input pooling restricts them to each stream)."""
        return hash_sign

    def _table(self, hash_index=None, hash_sign=None):
        """The table of these hashes, or of others of this sketch (checked by the native op)."""
        index = self.hash_index if hash_index is None else hash_index
        sign = self.hash_sign if hash_sign is None else hash_sign
        with torch.no_grad():
            return sketch_table(index, self._signs(sign), self.sketch_dim)

    def _locations(self, x, channels=None, name="input"):
        """(N, C, H, W) or (N, L, C), as set by input_format -> (N, L, C); C = `channels`,
        in_channels by default."""
        channels = channels or self.in_channels
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if self.input_format == "NCHW":
            if x.dim() != 4 or x.shape[1] != channels:
                raise ValueError(f"expected (N, {channels}, H, W) {name} (input_format="
                                 f"'NCHW'), got shape {tuple(x.shape)}")
            return x.flatten(2).transpose(1, 2)
        if x.dim() != 3 or x.shape[2] != channels:
            raise ValueError(f"expected (N, L, {channels}) {name} (input_format='NLC'), "
                             f"got shape {tuple(x.shape)}")
        return x

    def _pool(self, locations, alpha=None):
        return _kernel_pooling(locations, self.sketch_table, alpha, self.sketch_dim,
                               self.sqrt_normalize)[0]



def _check_loaded_hashes(module, state_dict, prefix, *_):
    """A state dict must be for this module's sketch: same in_channels, sketch_dim, order and
    y_channels, hash values in range. Checked before anything is copied, once per load (drawn
    hashes are valid by construction), rather than in every step: the table the step reads is
    built here, from the incoming hashes (the native op checks their values), and taken by
    _use_loaded_table once they are copied. A state dict saved before the sketch's spec was
    stored in it gets this module's; one with the former dict entry `_extra_state`, the spec
    that entry held."""
    legacy = state_dict.pop(prefix + "_extra_state", None)
    if prefix + "hash_spec" not in state_dict:
        spec = module._spec()
        if isinstance(legacy, dict):  # its keys: SPEC's, sketch_dim as 'dim'
            spec = [legacy.get("dim" if key == "sketch_dim" else key, value) or 0
                    for key, value in zip(module.SPEC, spec)]
        state_dict[prefix + "hash_spec"] = torch.tensor(spec, dtype=torch.int64)
    spec = state_dict[prefix + "hash_spec"]
    if not isinstance(spec, torch.Tensor) or spec.shape != (len(module.SPEC),):
        raise ValueError(f"the state dict's hash_spec must be ({len(module.SPEC)},) int64 "
                         f"{module.SPEC}, got {spec!r}")
    for key, loaded, own in zip(module.SPEC[:-1], spec.tolist(), module._spec()):
        if loaded != own:
            raise ValueError(f"the state dict is for {key}={loaded or None}, this "
                             f"{type(module).__name__} has {key}={getattr(module, key)}")
    index, sign = state_dict.get(prefix + "hash_index"), state_dict.get(prefix + "hash_sign")
    module._loaded_table = None
    if index is not None and sign is not None:
        module._loaded_table = module._table(index, sign)


def _use_loaded_table(module, _):
    """After a load: the table built from the state dict's hashes, and the seed they came
    with."""
    if module._loaded_table is not None:
        module.sketch_table = module._loaded_table.to(module.hash_index.device)
        module._loaded_table = None
    module.seed = int(module.hash_spec[-1])


def _use_loaded_rbf_gamma(module, _):
    rbf_gamma = float(module.rbf_gamma)
    module._rbf_gamma = None if rbf_gamma != rbf_gamma else rbf_gamma  # NaN: not known


class KernelPooling(_SketchPooling):
    """Kernel pooling (Cui et al. 2017): a Taylor-series kernel feature map of every location,
    up to order p, averaged over locations; signed sqrt and L2 normalisation by default.

    Args:
        in_channels: C, the channels of the input feature map.
        sketch_dim: sketch size d of every order >= 2.
        order: p >= 1; the default 4 is the thesis's (§3.3.2: enough for the RBF kernel).
        alpha: 'learned' (a Parameter), 'rbf' (fixed coefficients of the Gaussian RBF kernel,
            eq. 3.11) or 'ones' (fixed). 'learned' starts from the RBF coefficients when
            rbf_gamma is known, else from ones.
        rbf_gamma: the RBF kernel's γ; None leaves it to :meth:`estimate_rbf_gamma` (needed
            before 'rbf' runs). Held in the buffer ``rbf_gamma`` (NaN: not known yet).
        seed: seed of the dedicated torch.Generator the hashes are drawn from.
        input_format: 'NCHW' ((N, C, H, W) maps) or 'NLC' ((N, L, C) locations).
        sqrt_normalize: apply signed sqrt then L2 normalisation to the pooled vector.

    Shape: (N, C, H, W) or (N, L, C) -> (N, 1 + C + (p - 1)·d) (``output_dim``).
    """

    def __init__(self, in_channels: int, sketch_dim: int, *, order: int = 4,
                 alpha: str = "learned", rbf_gamma: Optional[float] = None, seed: int = 0,
                 input_format: str = "NCHW", sqrt_normalize: bool = True) -> None:
        super().__init__(in_channels, sketch_dim, order, seed, input_format, sqrt_normalize)
        check_choice("alpha", alpha, ALPHAS)
        self.alpha_mode = alpha
        self._rbf_gamma = None if rbf_gamma is None else float(rbf_gamma)
        # rbf_gamma as a tensor in the state dict (NaN: not known), read back once per load.
        self.register_buffer("rbf_gamma", torch.tensor(
            float("nan") if rbf_gamma is None else self._rbf_gamma, dtype=torch.float64))
        self.register_load_state_dict_post_hook(_use_loaded_rbf_gamma)
        if alpha == "ones" or rbf_gamma is None:
            init = torch.ones(order + 1)
        else:
            init = rbf_alpha(float(rbf_gamma), order).float()
        if alpha == "learned":
            self.alpha = nn.Parameter(init)
        else:
            self.register_buffer("alpha", init)

    @property
    def output_dim(self) -> int:
        return 1 + self.in_channels + (self.order - 1) * self.sketch_dim

    @torch.no_grad()
    def estimate_rbf_gamma(self, features: Tensor) -> float:
        """Set γ to the reciprocal of the mean inner product of `features`' location vectors
        (thesis 3.3.2) and, for alpha 'rbf' or 'learned', reset alpha to the RBF coefficients.

        features: maps in this module's input_format (e.g. conv features of training images).
        Returns γ.
        """
        self._rbf_gamma = estimate_rbf_gamma(self._locations(features))
        self.rbf_gamma.fill_(self._rbf_gamma)
        if self.alpha_mode != "ones":
            self.alpha.copy_(rbf_alpha(self._rbf_gamma, self.order))
        return self._rbf_gamma

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) or (N, L, C) (input_format) -> (N, output_dim)."""
        if self.alpha_mode == "rbf" and self._rbf_gamma is None:
            raise RuntimeError("KernelPooling(alpha='rbf') needs rbf_gamma: pass rbf_gamma= or "
                               "call estimate_rbf_gamma(features) first")
        return self._pool(self._locations(x), self.alpha)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, sketch_dim={self.sketch_dim}, "
                f"order={self.order}, alpha={self.alpha_mode!r}, rbf_gamma={self._rbf_gamma}, "
                f"seed={self.seed}, "
                f"input_format={self.input_format!r}, sqrt_normalize={self.sqrt_normalize}")


class CompactBilinearPooling(_SketchPooling):
    """Compact bilinear pooling (Gao et al. 2016): kernel pooling's order-2 block alone; with
    ``y_channels``, the two-input form (Fukui et al. 2016; two-stream bilinear CNNs): a sketch
    of the pooled outer product of two feature maps at the same locations.

    Same hashes as ``KernelPooling(order=2, seed=seed)``; with ``y_channels``, those of
    :func:`~finegrained_ops.draw_two_input_hashes`. The sketch is unbiased (torch's irfft
    normalisation), so it is d times smaller than Gao's Caffe output.

    Shape: x (N, C, H, W) or (N, L, C) per input_format, and y likewise with C_y = y_channels
    channels -> (N, sketch_dim).
    """

    def __init__(self, in_channels: int, sketch_dim: int, *, seed: int = 0,
                 input_format: str = "NCHW",
                 sqrt_normalize: bool = True, y_channels: Optional[int] = None) -> None:
        hashes = None if y_channels is None else draw_two_input_hashes(in_channels, y_channels,
                                                                         sketch_dim, seed=seed)
        super().__init__(in_channels, sketch_dim, 2, seed, input_format, sqrt_normalize, hashes,
                         y_channels)

    def _signs(self, hash_sign):
        if self.y_channels is None:
            return hash_sign
        return two_input_signs(hash_sign, self.y_channels)

    @property
    def output_dim(self) -> int:
        return self.sketch_dim

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """x, and y for the two-input form, (N, C, H, W) or (N, L, C) -> (N, sketch_dim)."""
        if (y is None) != (self.y_channels is None):
            raise ValueError("this CompactBilinearPooling takes " + (
                "one input (construct it with y_channels= for two)" if self.y_channels is None
                else f"a second input y with {self.y_channels} channels"))
        locations = self._locations(x)
        y_locations = None
        if y is not None:
            y_locations = self._locations(y, self.y_channels, "y")
            spatial = slice(2, None) if self.input_format == "NCHW" else slice(1, 2)
            if (y.shape[0], *y.shape[spatial]) != (x.shape[0], *x.shape[spatial]):
                where = "N and H, W" if self.input_format == "NCHW" else "N and L"
                raise ValueError(f"y must have x's {where}: x has shape {tuple(x.shape)}, y "
                                 f"{tuple(y.shape)}")
        if y_locations is not None:
            locations = _concat_streams(locations, y_locations, self.hash_index)
        return self._pool(locations)

    def extra_repr(self) -> str:
        two = "" if self.y_channels is None else f", y_channels={self.y_channels}"
        return (f"in_channels={self.in_channels}{two}, sketch_dim={self.sketch_dim}, "
                f"seed={self.seed}, "
                f"input_format={self.input_format!r}, sqrt_normalize={self.sqrt_normalize}")
