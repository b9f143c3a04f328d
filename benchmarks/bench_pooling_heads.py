"""Second-order pooling heads, forward + backward, on one feature map: kernel pooling,
compact bilinear pooling (one and two inputs) and iSQRT-COV, with their output dimensions.

    python -m benchmarks --ops pooling_heads [--device cpu|cuda] [--quick]

The map is the thesis configuration (VGG-16 conv5_3 at 224 px: 14 x 14 x 512, d = 4096,
p = 4; compact bilinear at Gao et al.'s d = 8192). iSQRT-COV runs on the 512 channels and,
as Li et al. do after a 1 x 1 convolution (not timed), on 256; it also runs with autograd
through the Newton-Schulz iterations instead of its hand-written backward, the choice
retrieval/covariance_pooling.py documents. Ratios are against kernel pooling (first row).
"""
import functools
import math

import torch

from . import bench_kernel_pooling
from .harness import compare
from .report import ratio_row

# (name, N, H*W, C): the maps every head pools
CASES = [("VGG-16 conv5_3", 8, 14 * 14, 512)]
QUICK_CASES = [("small", 2, 7 * 7, 128)]
KP_ORDER, ITERATIONS = 4, 5
# (kernel pooling d, compact bilinear d) of the full and the quick suite
SKETCH_DIMS = {False: (4096, 8192), True: (1024, 2048)}
SCALING_C = [64, 128, 256, 512]  # at N=8, 14 x 14


def heads(quick):
    """{head: (output dim of C channels, pool(x) on (N, C, H, W) maps)}; the first is the
    ratios' base."""
    import finegrained_ops as fo
    from finegrained_ops import reference
    from finegrained_ops.retrieval import covariance_pooling

    kp_dim, cbp_dim = SKETCH_DIMS[quick]

    def kernel_pooling(c):
        return fo.nn.KernelPooling(c, kp_dim, order=KP_ORDER, alpha="ones", sqrt_normalize=False)

    def compact_bilinear(c):
        return fo.nn.CompactBilinearPooling(c, cbp_dim, sqrt_normalize=False)

    def two_input(c):  # the map's two channel halves as the two streams
        pool = fo.nn.CompactBilinearPooling(c // 2, cbp_dim, y_channels=c - c // 2,
                                            sqrt_normalize=False)
        return lambda x: pool(x[:, :c // 2], x[:, c // 2:])

    def isqrt(c, reduce_to=None):
        return lambda x: covariance_pooling.isqrt_cov(x[:, :reduce_to], iterations=ITERATIONS)

    def isqrt_autograd(c):
        return lambda x: reference.isqrt_cov(x, ITERATIONS)

    triangle = lambda c: c * (c + 1) // 2  # noqa: E731
    return {f"kernel pooling p={KP_ORDER} d={kp_dim}": (lambda c: 1 + c + (KP_ORDER - 1) * kp_dim,
                                                        kernel_pooling),
            f"compact bilinear d={cbp_dim}": (lambda c: cbp_dim, compact_bilinear),
            f"two-input compact bilinear d={cbp_dim}": (lambda c: cbp_dim, two_input),
            "iSQRT-COV": (triangle, isqrt),
            "iSQRT-COV, C -> 256 (Li et al.)": (lambda c: triangle(min(c, 256)),
                                                functools.partial(isqrt, reduce_to=256)),
            "iSQRT-COV, autograd iterations (reference)": (triangle, isqrt_autograd)}


def setup(head, quick, n, locations, channels, device):
    side = math.isqrt(locations)
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(n, channels, side, side, generator=g)).to(device)
    pool = heads(quick)[head][1](channels)
    if isinstance(pool, torch.nn.Module):
        pool = pool.to(device)

    def step(maps):
        maps.grad = None
        pool(maps).sum().backward()

    return step, (x.requires_grad_(),)


def check_agreement(device):
    """The hand-written iSQRT-COV backward equals autograd through the iterations, and two-input
    compact bilinear pooling its outer-product definition, in float64, before any timing."""
    import finegrained_ops as fo
    from finegrained_ops import reference
    from finegrained_ops.retrieval import isqrt_cov

    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 24, 5, 5, generator=g, dtype=torch.float64).to(device)
    grads = []
    for fn in (isqrt_cov, reference.isqrt_cov):
        xi = x.clone().requires_grad_()
        fn(xi, iterations=ITERATIONS).pow(2).sum().backward()
        grads.append(xi.grad)
    assert torch.allclose(*grads, rtol=1e-10, atol=1e-12 * grads[1].abs().max().item())
    locations = x.flatten(2).transpose(1, 2)
    h, s = (t.to(device) for t in fo.draw_two_input_hashes(10, 14, 64, seed=1))
    ours = fo.compact_bilinear_pooling(locations[..., :10], h, s.double(), 64,
                                       y=locations[..., 10:])
    expected = reference.compact_bilinear_pooling(locations[..., :10], locations[..., 10:],
                                                  (h[0, :10], s[0, :10]), (h[1, 10:], s[1, 10:]),
                                                  64)
    assert torch.allclose(ours, expected, rtol=1e-10, atol=1e-12)


def work(head, n, locations, channels, quick):
    """(bytes, FLOPs) floor of forward + backward. Sketching heads: bench_kernel_pooling's model
    (p = 2 for compact bilinear). iSQRT-COV: the covariance (2 N C² M FLOPs) and its two
    backward products, and 2 C³ per matrix product of the iterations (K >= 2: the closed form
    3K - 3 forward and 7K - 7 backward, autograd 3K and 6K - 4); x read and its gradient
    written."""
    if head.startswith("iSQRT"):
        c = min(channels, 256) if "256" in head else channels
        k = ITERATIONS
        products = 9 * k - 4 if "autograd" in head else 10 * k - 10
        flops = n * (3 * 2 * c * c * locations + products * 2 * c ** 3)
        return 4 * 2 * n * locations * channels, flops
    kp_dim, cbp_dim = SKETCH_DIMS[quick]
    if head.startswith("kernel"):
        return bench_kernel_pooling.work(n, locations, channels, kp_dim, KP_ORDER)
    return bench_kernel_pooling.work(n, locations, channels, cbp_dim, 2)


def _cases(shapes, device, repeats, quick, names=None):
    names = names or list(heads(quick))
    return compare({shape: {h: functools.partial(setup, h, quick, *shape) for h in names}
                    for shape in shapes}, device, repeats)


def comparison(device, quick=False, repeats=10):
    cases = QUICK_CASES if quick else CASES
    results = _cases([tuple(c[1:]) for c in cases], device, repeats, quick)
    output_dim = {head: dim for head, (dim, _) in heads(quick).items()}
    return [ratio_row({"case": f"{name} N,H*W,C={n},{hw},{c}", "impl": head,
                       "output dim": output_dim[head](c)}, r, work(head, n, hw, c, quick),
                      base="kernel pooling")
            for name, n, hw, c in cases for head, r in results[(n, hw, c)].items()]


def scaling(device, quick=False, repeats=5):
    """{sweep: {head: [(C, median_ms, peak_mib)]}} against the channels C at N=8, 14 x 14:
    iSQRT-COV is cubic in C, the sketches linear."""
    channels = SCALING_C[:3 if quick else 4]
    names = [h for h in heads(quick) if not h.startswith(("two-input", "iSQRT-COV,"))]
    results = _cases([(8, 196, c) for c in channels], device, repeats, quick, names)
    return {"channels C": {h: [(c, results[(8, 196, c)][h]["median_ms"],
                                results[(8, 196, c)][h]["peak_mib"]) for c in channels]
                           for h in names}}
