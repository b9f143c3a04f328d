"""Kernel pooling, forward + backward: the native op (spectra pooled over locations, one
inverse FFT per image and order, spectra recomputed in the backward) vs the in-package
reference, which is the usual vectorised PyTorch version (count sketch by index_add, rfft,
running product and irfft at every location, then the mean; autograd keeps it all), and, in the
full suite, that version under torch.compile.

    python -m benchmarks --ops kernel_pooling [--device cpu|cuda] [--quick]

Prints the median time, how many times faster native is, and the extra peak memory; the
suite also runs scaling(): cost against locations L and sketch size d.
"""
import functools
import math

import torch

from .harness import compare
from .report import ratio_row

# (name, N, H*W, C, d, p): the thesis configuration (VGG-16 conv5_3), ResNet-50's C = 2048,
# and on CUDA a larger batch at 448 x 448 input resolution.
CONFIGS = [("VGG-16", 8, 14 * 14, 512, 4096, 4), ("ResNet-50", 8, 14 * 14, 2048, 4096, 4)]
CUDA_CONFIGS = [("VGG-16 448px", 32, 28 * 28, 512, 4096, 4)]
QUICK_CONFIGS = [("small", 4, 7 * 7, 256, 1024, 3)]
CANDIDATES = ("native", "reference")
COMPILED = "reference, torch.compile"  # the full suite only: compiling costs a minute per case
# scaling sweeps at N=4, C=256, p=3: L at d=1024, then d at L=49
SCALING_L, SCALING_D = [16, 49, 196, 784], [256, 1024, 4096, 16384]


def setup(candidate, n, locations, channels, dim, order, device):
    import finegrained_ops as fo
    from finegrained_ops.reference import kernel_pooling as reference

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(n, locations, channels, generator=g)).to(device).requires_grad_()
    hash_index, hash_sign = (t.to(device) for t in fo.draw_hashes(channels, dim, order, seed=0))
    alpha = torch.ones(order + 1, device=device, requires_grad=True)
    fn = (fo.kernel_pooling if candidate == "native"
          else torch.compile(reference) if candidate == COMPILED else reference)

    def step(features, a):
        features.grad = a.grad = None
        fn(features, hash_index, hash_sign, a, dim).sum().backward()

    return step, (x, alpha)


def check_agreement(device):
    """Native and reference agree in float64 (values and gradients) before anything is timed."""
    import finegrained_ops as fo
    from finegrained_ops.reference import kernel_pooling as reference

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 49, 64, generator=g, dtype=torch.float64).to(device)
    h, s = (t.to(device) for t in fo.draw_hashes(64, 257, 4, seed=1))
    alpha = torch.rand(5, generator=g, dtype=torch.float64).to(device)
    outputs = []
    for fn in (fo.kernel_pooling, reference):
        xi = x.clone().requires_grad_()
        y = fn(xi, h, s.double(), alpha, 257)
        y.pow(2).sum().backward()
        outputs.append((y, xi.grad))
    for a, b in zip(*outputs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())


def work(n, locations, channels, dim, order):
    """(bytes, FLOPs) floor of forward + backward: per location 3p real FFTs of length d
    (forward p; backward p recomputed and p inverse; 2.5 d log2 d FLOPs each), the spectral
    running products (about 4 (p - 1) complex multiply-adds per bin) and the count sketches
    and their adjoints (2 p C); x read, its gradient and the output written (float32)."""
    per_location = (3 * order * 2.5 * dim * math.log2(dim) + 32 * (order - 1) * (dim // 2 + 1)
                    + 2 * order * channels)
    out = 1 + channels + (order - 1) * dim
    return 4 * (2 * n * locations * channels + n * out), n * locations * per_location


def _cases(shapes, device, repeats, names=CANDIDATES):
    """{shape: {candidate: result}} for (N, L, C, d, p) shapes, in one child process."""
    return compare({shape: {c: functools.partial(setup, c, *shape) for c in names}
                    for shape in shapes}, device, repeats)


def comparison(device, quick=False, repeats=10):
    """Rows of the main table: native vs reference (and, in the full suite, the reference
    under torch.compile) at the configured shapes."""
    configs = QUICK_CONFIGS if quick else CONFIGS + (CUDA_CONFIGS if device == "cuda" else [])
    results = _cases([tuple(c[1:]) for c in configs], device, repeats,
                     CANDIDATES + (() if quick else (COMPILED,)))
    rows = []
    for name, *shape in configs:
        for cand, r in results[tuple(shape)].items():
            rows.append(ratio_row({"case": f"{name} N,L,C,d,p={','.join(map(str, shape))}",
                                   "impl": cand}, r, work(*shape)))
    return rows


def scaling(device, quick=False, repeats=5):
    """{sweep: {impl: [(x, median_ms, peak_mib)]}} against L (d=1024) and d (L=49)."""
    sweeps = {"locations L": [(x, (4, x, 256, 1024, 3)) for x in SCALING_L[:3 if quick else 4]],
              "sketch size d": [(x, (4, 49, 256, x, 3)) for x in SCALING_D[:3 if quick else 4]]}
    results = _cases({shape for points in sweeps.values() for _, shape in points}, device,
                     repeats)
    return {sweep: {c: [(x, results[shape][c]["median_ms"], results[shape][c]["peak_mib"])
                        for x, shape in points] for c in CANDIDATES}
            for sweep, points in sweeps.items()}
