"""Timing and peak-memory measurement shared by the benchmarks.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` during the stage above what was allocated at its
start (`peak_mib`), and the absolute peak including the model (`total_peak_mib`); on CPU, the peak resident
set size above the stage's starting RSS, sampled every 2 ms by a background thread (allocations shorter than
that can be missed, so CPU peaks are lower bounds).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_mib: float
    note: str = ""
    total_peak_mib: float = float("nan")  # CUDA only: absolute peak, model included


class _RssSampler:
    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def __enter__(self):
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def measure(name: str, fn: Callable[[], object], device: str = "cpu", repeat: int = 1, note: str = "") -> Measurement:
    """Best-of-`repeat` wall time of `fn()` and its peak memory above the starting point (MiB)."""
    best = float("inf")
    peak = 0.0
    total = 0.0
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**20)
            total = max(total, torch.cuda.max_memory_allocated() / 2**20)
        else:
            with _RssSampler() as sampler:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            peak = max(peak, (sampler.peak - sampler.start_rss) / 2**20)
    return Measurement(name, best, peak, note, total if device.startswith("cuda") else float("nan"))


def machine_description() -> str:
    cpu = f"{psutil.cpu_count(logical=True)} logical CPUs ({platform.processor() or platform.machine()})"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def format_table(rows: list[Measurement]) -> str:
    lines = [f"{'stage':58s} {'seconds':>10s} {'peak MiB':>9s}  note", "-" * 100]
    for r in rows:
        lines.append(f"{r.name:58s} {r.seconds:10.3f} {r.peak_mib:9.1f}  {r.note}")
    return "\n".join(lines)


def markdown_table(rows: list[Measurement]) -> str:
    """The same rows as a Markdown table (with the absolute CUDA peak where measured)."""
    lines = ["| stage | seconds | peak MiB (stage) | peak MiB (total) | note |", "|---|---:|---:|---:|---|"]
    for r in rows:
        total = "" if r.total_peak_mib != r.total_peak_mib else f"{r.total_peak_mib:,.0f}"
        peak = "" if r.peak_mib != r.peak_mib else f"{r.peak_mib:,.1f}"
        lines.append(f"| {r.name} | {r.seconds:.3f} | {peak} | {total} | {r.note} |")
    return "\n".join(lines)
