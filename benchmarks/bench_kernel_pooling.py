"""Kernel pooling, forward + backward: the native op (spectra pooled over locations, one
inverse FFT per image and order, spectra recomputed in the backward) vs the in-package
reference, which is the usual vectorised PyTorch version (count sketch by index_add, rfft,
running product and irfft at every location, then the mean; autograd keeps it all).

    python benchmarks/bench_kernel_pooling.py [--device cpu|cuda] [--json PATH]

Prints the median time, how many times faster native is, and the extra peak memory.
"""
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, measure, parse_args, print_table, save  # noqa: E402

# (name, N, H*W, C, d, p): the thesis configuration (VGG-16 conv5_3), ResNet-50's C = 2048,
# and on CUDA a larger batch at 448 x 448 input resolution.
CONFIGS = [("VGG-16", 8, 14 * 14, 512, 4096, 4), ("ResNet-50", 8, 14 * 14, 2048, 4096, 4)]
CUDA_CONFIGS = [("VGG-16 448px", 32, 28 * 28, 512, 4096, 4)]
CANDIDATES = ("native", "reference")


def setup(candidate, n, locations, channels, dim, order, device):
    import finegrained_ops as fo
    from finegrained_ops.reference import kernel_pooling as reference

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(n, locations, channels, generator=g)).to(device).requires_grad_()
    hash_index, hash_sign = (t.to(device) for t in fo.draw_hashes(channels, dim, order, 0))
    alpha = torch.ones(order + 1, device=device, requires_grad=True)
    fn = fo.kernel_pooling if candidate == "native" else reference

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
    h, s = (t.to(device) for t in fo.draw_hashes(64, 257, 4, 1))
    alpha = torch.rand(5, generator=g, dtype=torch.float64).to(device)
    outputs = []
    for fn in (fo.kernel_pooling, reference):
        xi = x.clone().requires_grad_()
        y = fn(xi, h, s.double(), alpha, 257)
        y.pow(2).sum().backward()
        outputs.append((y, xi.grad))
    for a, b in zip(*outputs):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())


def main():
    args = parse_args(__doc__)
    check_agreement(args.device)
    configs = CONFIGS + (CUDA_CONFIGS if args.device == "cuda" else [])
    rows = []
    for name, n, locations, channels, dim, order in configs:
        results = {cand: measure(functools.partial(setup, cand, n, locations, channels, dim,
                                                   order), args.device, repeats=args.repeats)
                   for cand in CANDIDATES}
        base = results["native"]
        for cand, r in results.items():
            rows.append({"config": name, "N,L,C,d,p": f"{n},{locations},{channels},{dim},{order}",
                         "impl": cand, "median ms": f"{r['median_ms']:.1f}",
                         "native speedup": f"{r['median_ms'] / base['median_ms']:.1f}x",
                         "peak MiB": f"{r['peak_mib']:.1f}",
                         "native memory saving": f"{r['peak_mib'] / max(base['peak_mib'], 0.1):.0f}x",
                         "_raw": r})
    print(f"kernel_pooling forward+backward on {args.device}: {machine()}")
    print_table(rows, ["config", "N,L,C,d,p", "impl", "median ms", "native speedup", "peak MiB",
                       "native memory saving"])
    if args.json:
        save(args.json, args.device, rows)


if __name__ == "__main__":
    main()
