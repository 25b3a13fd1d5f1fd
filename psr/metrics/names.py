"""Metric names known without importing TensorFlow, so configurations are checked at load time.

`psr.metrics.registry` registers the built-in metrics under exactly these names (a test
keeps the two in step); metrics a library user registers are added once the registry is
imported.
"""

from __future__ import annotations

import difflib
import sys
from typing import Iterable

BUILTIN_METRICS: tuple[str, ...] = ("fid", "kid")  # psr.metrics.registry: distribution metrics
BUILTIN_PAIRED_METRICS: tuple[str, ...] = ("lpips", "fcn", "miou")  # psr.metrics.paired


def known_metric_names() -> list[str]:
    """The built-in names plus any registered so far (without importing the registries)."""
    names = set(BUILTIN_METRICS) | set(BUILTIN_PAIRED_METRICS)
    registry = sys.modules.get("psr.metrics.registry")
    if registry is not None:
        names |= set(registry.list_metrics())
    paired = sys.modules.get("psr.metrics.paired")
    if paired is not None:
        names |= set(paired.list_paired_metrics())
    return sorted(names)


def unknown_metric_message(names: Iterable[str]) -> str | None:
    """"Unknown metric 'fdi' ... Did you mean 'fid'?" for the first unknown name, or None when all are known."""
    known = known_metric_names()
    names = list(names)
    if not names:
        return f"no metric given; choose from {', '.join(known)}"
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            return f"unknown metric {name!r}; valid metrics: {', '.join(known)}.{hint}"
    return None
