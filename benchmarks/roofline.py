"""Each row's floor: the least time any implementation needs on this device, from the op's
minimum bytes and FLOPs (its `work()` model) and the device's measured copy bandwidth and
float32 matmul rate."""
import time

import torch


def measure_ceilings(device, repeats=5):
    """What this device attains, measured once per run: memory bandwidth (GB/s; a copy of a
    tensor far larger than the caches, bytes read + written) and float32 matmul rate (GFLOP/s;
    TF32 stays off, as for our float32 kernels). Best of ``repeats``."""
    elements = (512 if device == "cuda" else 256) * 2**20 // 4
    src = torch.ones(elements, device=device)
    dst = torch.empty_like(src)
    m = 8192 if device == "cuda" else 2048
    a = torch.randn(m, m, device=device)
    b = torch.randn(m, m, device=device)
    copy_s = _best_seconds(lambda: dst.copy_(src), device, repeats)
    matmul_s = _best_seconds(lambda: torch.mm(a, b), device, repeats)
    return {"bandwidth_gbs": 2 * 4 * elements / copy_s / 1e9,
            "peak_gflops": 2 * m**3 / matmul_s / 1e9}


def _best_seconds(fn, device, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def add_floor(rows, ceilings):
    """Give every row with a work model its floor: max(bytes / bandwidth, FLOPs / peak), the
    time no implementation can beat on this device, and the share of it the row achieves
    (floor / median, 100% = at the roofline)."""
    for row in rows:
        raw = row["_raw"]
        if "min_bytes" not in raw:
            row["floor ms"] = row["% of floor"] = "-"
            continue
        floor = max(raw["min_bytes"] / (ceilings["bandwidth_gbs"] * 1e9),
                    raw["min_flops"] / (ceilings["peak_gflops"] * 1e9)) * 1e3
        raw["floor_ms"], raw["floor_fraction"] = floor, floor / raw["median_ms"]
        row["floor ms"] = f"{floor:.3f}"
        row["% of floor"] = f"{100 * floor / raw['median_ms']:.1f}"
