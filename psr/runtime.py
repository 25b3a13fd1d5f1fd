"""Host-memory setting of the process (glibc malloc arenas), applied by the command line.

TensorFlow allocates CPU tensors with `malloc`. glibc gives every thread that
meets a locked arena a new one (up to 8 per core), and each arena keeps its own
freed blocks, so a training step's free memory ends up scattered over several
heaps and the process's peak memory is higher than its tensors need.
`limit_malloc_arenas` caps the number of arenas. It must run before TensorFlow
starts its thread pools, hence before `import tensorflow`: `main.py` calls
`configure_host_memory` first thing, and `bench/train_step.py` does the same.

Measured with `python bench/train_step.py --size 128` on the 2-core CPU machine
(horse→zebra network): peak RSS 1.33-1.42 GB with glibc's default, 1.26-1.28 GB
with one arena, step time unchanged within noise (see README, Benchmarks). It
changes no computed value. Without glibc (macOS, musl, Windows) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Optional

from psr.errors import ConfigError

# mallopt parameter number of M_ARENA_MAX in glibc's malloc.h.
_M_ARENA_MAX = -8
# Environment variable the command line reads: the arena cap (0 = leave glibc's default).
MALLOC_ARENAS_ENV = "PSR_MALLOC_ARENAS"
DEFAULT_MALLOC_ARENAS = 1


@functools.cache
def _libc() -> Optional[ctypes.CDLL]:
    """glibc, or None where malloc is not glibc's (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "mallopt"):
        return None
    return libc


def limit_malloc_arenas(arenas: int) -> bool:
    """Caps glibc's malloc arenas at `arenas` for threads that start later. Returns whether it applied.

    Call it before `import tensorflow`: threads that already own an arena keep it.
    """
    if arenas < 1:
        raise ValueError(f"malloc arenas must be at least 1, got {arenas}")
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, int(arenas)) == 1)


def malloc_arenas_from_env() -> int:
    """The arena cap asked for by `PSR_MALLOC_ARENAS` (default 1; 0 keeps glibc's default)."""
    value = os.environ.get(MALLOC_ARENAS_ENV, "").strip()
    if not value:
        return DEFAULT_MALLOC_ARENAS
    try:
        arenas = int(value)
    except ValueError:
        arenas = -1
    if arenas < 0:
        raise ConfigError(
            f"{MALLOC_ARENAS_ENV}={value!r} is not a whole number >= 0; "
            f"use e.g. {MALLOC_ARENAS_ENV}=1 (one malloc arena) or 0 (glibc's default)"
        )
    return arenas


def configure_host_memory(arenas: Optional[int] = None) -> int:
    """Caps malloc at `arenas` (None: `PSR_MALLOC_ARENAS`, default 1; 0: glibc's default).

    `main.py` and `bench/train_step.py` call this first thing. Returns the cap asked for (0 = none).
    """
    arenas = malloc_arenas_from_env() if arenas is None else arenas
    if arenas:
        limit_malloc_arenas(arenas)
    return arenas
