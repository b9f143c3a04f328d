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
import ctypes
import multiprocessing as mp
import os
import platform
import queue as queue_module
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
    while True:  # a child that dies (an exception, the OOM killer) must not hang the suite
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"the benchmark process exited with code {proc.exitcode} "
                                   "before reporting (its traceback is printed above)")
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
