"""Shared benchmark machinery: time a forward+backward callable and measure its peak memory.

Each measurement runs in a fresh spawned process so that peak memory is attributable: on the
CPU it is the rise of the process' peak RSS over the RSS once the inputs are allocated (the
peak is reset through /proc/self/clear_refs, so the imports' own peak does not hide a small
step; without it, ru_maxrss); on CUDA it is torch.cuda.max_memory_allocated over the inputs.
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import re
import resource
import statistics
import time

import torch


def _measure(setup, device, repeats, warmup, queue):
    step, inputs = setup(device)
    for _ in range(warmup):  # one-time costs (thread pools, library buffers) are not the step's
        step(*inputs)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _reset_peak_rss()
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
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (_peak_rss() - base_rss) * 1024
    queue.put({"median_ms": statistics.median(times) * 1e3, "peak_mib": peak / 2**20})


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

    The child's malloc returns every block of 64 KiB or more to the OS when freed, so its RSS
    follows live memory and the peak after the warm-up is the step's own.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(setup, device, repeats, warmup, queue))
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


def machine():
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_table(rows, columns):
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)))


def parse_args(doc):
    """The options every benchmark script takes: --device, --repeats, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args()


def save(path, device, rows):
    """Write the machine and the rows, each with its raw measurement ('_raw') merged in."""
    payload = {"machine": machine(), "device": device,
               "rows": [{k: v for k, v in r.items() if k != "_raw"} | r["_raw"] for r in rows]}
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
