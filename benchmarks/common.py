"""Timing and memory helpers shared by the benchmark scripts.

Time: median of ``repeats`` runs after ``warmup`` runs, all in this process
so ratios compare like with like.  :func:`time_interleaved` runs the
contenders of one comparison in alternating rounds (a slow spell of a
shared machine hits all of them) and reads the process's CPU time as well
as the wall clock: on a loaded machine the wall clock also counts the time
other processes held the core, the CPU time of a one-thread run does not.  Memory: the peak resident-set increase of
a fresh process that runs the workload once (CPU), or the increase of
``torch.cuda.max_memory_allocated`` over one run in this process (GPU: the
allocator's counter is exact, and a fresh process per reading would spend
the lent GPU's minutes on start-up).
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> Dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}
    import torch_geometric
    info["torch_geometric"] = torch_geometric.__version__
    for name in ("torch_scatter", "torch_sparse"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        from tgnn_transformers.functional import triton_attention as kernel
        info["triton_kernel"] = {
            "backward": kernel.BACKWARD,
            "num_warps": kernel.NUM_WARPS or "one per 1024 tile elements",
            "block_e": kernel.BLOCK_E or "from the mean degree (16..64)"}
    return info


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_it(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
            device: str = "cpu") -> Dict[str, float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        gc.collect()
    return {"median_s": statistics.median(times), "min_s": min(times),
            "repeats": repeats}


def load_average() -> Optional[list]:
    """The 1, 5 and 15 minute load averages (None where unknown)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


#: A contender of :func:`time_interleaved`: a callable, or ``(setup, run)``
#: where ``setup()`` (not timed) returns the argument of ``run``.
Contender = Any


def time_interleaved(contenders: Dict[str, Contender], repeats: int = 5,
                     warmup: int = 1, device: str = "cpu",
                     inner: int = 1) -> Dict[str, Dict[str, float]]:
    """Times every contender ``repeats`` times in alternating rounds (round
    ``r`` runs each once, in a rotated order) after ``warmup`` rounds; each
    reading is the mean of ``inner`` back-to-back calls.

    Returns per contender ``median_s`` / ``min_s`` of the wall clock and,
    on the CPU, ``cpu_median_s`` / ``cpu_min_s`` of the process's CPU time
    (all threads; equal to the wall clock of a one-thread run on an idle
    core), plus ``repeats`` and ``inner``."""
    names = list(contenders)
    steps = {}
    for name, contender in contenders.items():
        setup, run = (contender if isinstance(contender, tuple)
                      else (None, contender))
        steps[name] = (setup, run)

    def once(name):
        setup, run = steps[name]
        args = [setup() for _ in range(inner)] if setup else None
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(inner):
            run(args[i]) if setup else run()
        _sync(device)
        return ((time.perf_counter() - wall) / inner,
                (time.process_time() - cpu) / inner)

    for _ in range(warmup):
        for name in names:
            once(name)
    walls = {name: [] for name in names}
    cpus = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            wall, cpu = once(name)
            walls[name].append(wall)
            cpus[name].append(cpu)
    out = {}
    for name in names:
        out[name] = {"median_s": statistics.median(walls[name]),
                     "min_s": min(walls[name]), "repeats": repeats,
                     "inner": inner}
        if not device.startswith("cuda"):
            out[name].update(cpu_median_s=statistics.median(cpus[name]),
                             cpu_min_s=min(cpus[name]))
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets the VmHWM high-water mark
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


PROBE_FLAG = "--memory-probe"

#: The script's workload builder, registered by :func:`run_probe_if_asked`.
_BUILDER: Optional[Callable[[Dict[str, Any]], Callable[[], Any]]] = None


def _cuda_peak(fn: Callable[[], Any]) -> int:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def peak_memory(script: str, spec: Dict[str, Any]) -> Optional[int]:
    """Peak resident-memory increase (bytes) of one run of a workload, in a
    fresh process: ``python <script> --memory-probe <spec>``.  A fresh
    process keeps earlier workloads' peaks out of the reading (and avoids
    forking a process whose OpenMP threads are running).  On CUDA the
    workload is built and measured in this process."""
    if spec.get("device", "cpu").startswith("cuda") and _BUILDER is not None:
        fn = _BUILDER(spec)
        peak = _cuda_peak(fn)
        del fn
        gc.collect()
        return peak
    cmd = [sys.executable, script, PROBE_FLAG, json.dumps(spec)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    for line in result.stdout.splitlines()[::-1]:
        if line.startswith("PEAK_BYTES "):
            return int(line.split()[1])
    print("   memory probe failed:", result.stderr.strip()[-300:])
    return None


def run_probe_if_asked(build: Callable[[Dict[str, Any]], Callable[[], Any]]
                       ) -> None:
    """In a probe process: build the workload, then report its peak.
    Elsewhere: register ``build`` for the in-process CUDA readings."""
    global _BUILDER
    _BUILDER = build
    if PROBE_FLAG not in sys.argv:
        return
    spec = json.loads(sys.argv[sys.argv.index(PROBE_FLAG) + 1])
    fn = build(spec)
    gc.collect()
    if spec.get("device", "cpu").startswith("cuda"):
        print("PEAK_BYTES", _cuda_peak(fn))
    else:
        base = _status_kb("VmRSS")
        if not _reset_peak_rss():
            print("note: could not reset VmHWM", file=sys.stderr)
        fn()
        print("PEAK_BYTES", max(0, _status_kb("VmHWM") - base) * 1024)
    sys.exit(0)


def write_result(name: str, payload: Dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    return path
