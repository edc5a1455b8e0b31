"""Wall time, peak memory and storage of a piece of work (UnlearnCanvas' efficiency columns).

Peak memory is the process's peak resident set size on a CPU (Linux: the kernel's high-water
mark, reset before the work through ``/proc/self/clear_refs``) and ``max_memory_allocated`` on a
CUDA device.
"""

from __future__ import annotations

import contextlib
import resource
import time
from pathlib import Path


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def measure():
    """Yield a dict that receives ``seconds`` and ``peak_memory_bytes`` when the block ends."""
    import torch

    out: dict[str, float] = {}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out["peak_memory_scope"] = "cuda_max_allocated" if cuda else (
        "process_rss" if _reset_peak_rss() else "process_rss_lifetime"
    )  # fmt: skip
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()
