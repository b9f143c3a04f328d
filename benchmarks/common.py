"""Shared benchmark machinery: time a forward+backward callable and measure its peak memory.

Each table is measured in a fresh spawned process, in two phases. Memory first: the child
starts with malloc returning every freed block of 64 KiB or more to the OS
(MALLOC_MMAP_THRESHOLD_), so that its RSS follows live memory, and a step's peak is the rise
of the peak RSS over the RSS with the inputs allocated (the peak is reset through
/proc/self/clear_refs, so the imports' own peak does not hide a small step; without it,
ru_maxrss). On CUDA it is torch.cuda.max_memory_allocated over the inputs. Then timing, with
malloc set back to what glibc settles on in a long-running process (blocks under 32 MiB
reused, not returned): with every large block returned, each step would also pay a page
fault per touched page, which a user's training loop does not.
"""
import argparse
import ctypes
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import time

import torch


def _median_seconds(setup, device, repeats, warmup):
    step, inputs = setup(device)
    for _ in range(warmup):  # one-time costs (thread pools, library buffers) are not the step's
        step(*inputs)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(*inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step(*inputs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes(setup, device):
    """The memory one step adds on top of its inputs, after a warm-up step."""
    step, inputs = setup(device)
    step(*inputs)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(*inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base_rss = _reset_peak_rss()
    step(*inputs)
    return (_peak_rss() - base_rss) * 1024


def _measure_all(jobs, device, queue):
    peaks = [_peak_bytes(setup, device) for setup, _, _ in jobs]
    _keep_freed_memory()
    seconds = [_median_seconds(setup, device, repeats, warmup)
               for setup, repeats, warmup in jobs]
    queue.put([{"median_ms": s * 1e3, "peak_mib": peak / 2**20}
               for s, peak in zip(seconds, peaks)])


def _keep_freed_memory():
    """glibc: the thresholds its malloc reaches by itself in a long-running process (mmap
    threshold raised to at most 32 MiB by the blocks it frees, trim threshold twice that),
    replacing the 64 KiB the memory phase started with. Elsewhere a no-op."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _rss_field(name):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{name}:\s+(\d+) kB", f.read()).group(1))


def _reset_peak_rss():
    """Reset the peak RSS to the current RSS where Linux allows it; the baseline in KiB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _rss_field("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss():
    try:
        return _rss_field("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(setup, device="cpu", repeats=10, warmup=3):
    """Run `setup(device) -> (step, inputs)` in a child process; time `step(*inputs)`.
    Returns {'median_ms', 'peak_mib'}."""
    return measure_many([(setup, repeats, warmup)], device)[0]


def measure_many(jobs, device="cpu"):
    """Measure several (setup, repeats, warmup) jobs in one child process (one interpreter
    start for all): first every job's peak memory, then every job's median time, each after
    its own warm-up, so the jobs before it do not count. Returns a list of {'median_ms',
    'peak_mib'}."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure_all, args=(jobs, device, queue))
    previous = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        proc.start()
    finally:
        if previous is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = previous
    result = queue.get()
    proc.join()
    return result


def compare(cases, device, repeats=10, warmup=3, slow=(), slow_repeats=3):
    """Measure several cases {case: {candidate: setup}} (native first in each) in one child
    process; returns {case: {candidate: {'median_ms', 'peak_mib', 'speedup',
    'memory_ratio'}}}, the ratios being the candidate's over native's (how many times faster
    / leaner native is). Candidates named in `slow` get one warm-up and `slow_repeats`."""
    keys = [(case, name) for case, setups in cases.items() for name in setups]
    jobs = [(cases[case][name], slow_repeats if name in slow else repeats,
             1 if name in slow else warmup) for case, name in keys]
    results = {case: {} for case in cases}
    for (case, name), r in zip(keys, measure_many(jobs, device)):
        results[case][name] = r
    for per_case in results.values():
        base = next(iter(per_case.values()))
        for r in per_case.values():
            r["speedup"] = r["median_ms"] / base["median_ms"]
            r["memory_ratio"] = r["peak_mib"] / max(base["peak_mib"], 0.1)
    return results


def machine():
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def ratio_row(fields, result, work=None):
    """A table row: `fields`, then the candidate's time, memory and native's advantage.

    work: (bytes, flops) that the computation must at least move through memory and execute
    (the inputs of :func:`add_floor`), or None where no floor is modelled."""
    if work is not None:
        result = result | {"min_bytes": work[0], "min_flops": work[1]}
    return {**fields, "median ms": f"{result['median_ms']:.2f}",
            "native speedup": f"{result['speedup']:.1f}x",
            "peak MiB": f"{result['peak_mib']:.1f}",
            "native memory saving": f"{result['memory_ratio']:.1f}x", "_raw": result}


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


def columns_of(rows):
    return [c for c in rows[0] if not c.startswith("_")]


def print_table(rows, columns=None):
    columns = columns or columns_of(rows)
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)))


def parse_args(doc):
    """The options every benchmark script takes: --device, --quick, --repeats, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args()


def save(path, device, rows):
    """Write the machine and the rows, each with its raw measurement ('_raw') merged in."""
    payload = {"machine": machine(), "device": device,
               "rows": [{k: v for k, v in r.items() if k != "_raw"} | r["_raw"] for r in rows]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
