"""The dataset layout of CycleGAN / CUT: `root/{train,test}{A,B}`, and which domain is the source.

The one place that knows the folder names and the AtoB/BtoA swap; every loader, the evaluation and the
sample grids ask here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union


def domain_letters(direction: str) -> tuple[str, str]:
    """(source, target) domain letters: ("A", "B") for AtoB, ("B", "A") for BtoA."""
    return ("A", "B") if direction == "AtoB" else ("B", "A")


def domain_folders(root: Union[str, Path], direction: str, phase: str = "test") -> tuple[Path, Path]:
    """(source, target) folders `root/{phase}A`, `root/{phase}B` of a split, after the AtoB/BtoA swap."""
    source, target = domain_letters(direction)
    return Path(root) / f"{phase}{source}", Path(root) / f"{phase}{target}"
