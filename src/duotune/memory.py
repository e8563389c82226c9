"""Host memory: hand freed heap pages back to the OS, and read this process's resident size.

glibc keeps memory that Python and torch have freed inside the heap for reuse, so a process that
once peaked (a step's logits, a batch of rollouts) keeps that resident size, and two workers on one
machine can run out of memory while holding little. `malloc_trim(0)` returns the free pages.
Measured on the protocol's GRPO worker (SmolLM2-135M, vLLM rollouts, 8 prompts x 4): resident
10.0 GB after the first step, 6.4 GB after one trim (live tensors: 1.6 GB). The trainer trims after
every step and the comparison after every evaluation; it takes milliseconds. Elsewhere than glibc
(macOS, musl) `release_host_memory` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> object | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_host_memory() -> bool:
    """Return the heap's free pages to the OS (glibc `malloc_trim(0)`); False where there is no glibc."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def rss_gb() -> float | None:
    """This process's resident set size in GB (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except (OSError, ValueError):
        return None
