"""Datasets psr generates itself: the marker that claims the folder, the completeness check, the staged write.

A generated dataset is a folder of named sub-folders holding numbered PNGs, plus a JSON marker (generator,
version, arguments) written last. The folder is complete when the marker matches and every sub-folder
holds exactly the expected names; it is psr's to replace when it holds nothing else. Used by the shapes
quickstart (`psr.data.synthetic`) and the multi-domain quickstart (`psr.data.synthetic_multidomain`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

from psr.errors import DatasetError
from psr.rundir import atomic_write_text, staged_folder

GENERATED_FILE_NAME = re.compile(r"^\d{4,}\.png$")


def numbered_names(count: int) -> list[str]:
    """`0000.png`, `0001.png`, … (`count` names)."""
    return [f"{index:04d}.png" for index in range(count)]


def is_complete(root: Path, marker_name: str, marker: dict, expected: Mapping[str, Sequence[str]]) -> bool:
    """Whether `root` holds `marker` and, in every relative folder of `expected`, exactly its file names."""
    try:
        stored = json.loads((root / marker_name).read_text())
    except (OSError, ValueError):
        return False
    if stored != marker:
        return False
    for folder, names in expected.items():
        try:
            if sorted(os.listdir(root / folder)) != sorted(names):
                return False
        except OSError:
            return False
    return True


def holds_only_generated(root: Path, marker_name: str, folders: Sequence[str]) -> bool:
    """True when `root` only holds the marker, the given relative folders (and their parents) and
    generated PNG names inside those folders: then psr made it and may replace it."""
    leaves = {Path(folder) for folder in folders}
    parents = {parent for leaf in leaves for parent in leaf.parents if parent != Path(".")}
    for directory, subdirs, names in os.walk(root):
        relative = Path(directory).relative_to(root)
        if relative == Path("."):
            files = [name for name in names if name != marker_name]
        else:
            files = names
        if relative != Path(".") and relative not in leaves and relative not in parents:
            return False
        if relative in leaves:
            if subdirs or any(not GENERATED_FILE_NAME.match(name) for name in files):
                return False
        elif files:
            return False
    return True


def write_generated(
    root: Path,
    marker_name: str,
    marker: dict,
    expected: Mapping[str, Sequence[str]],
    generate: Callable[[Path], None],
    what: str,
) -> Path:
    """Writes a generated dataset into `root` unless it is already complete; returns `root`.

    `generate(staging)` writes every folder of `expected` into a staging folder next to `root`; the
    marker goes in last and the staging folder is renamed into place (`psr.rundir.staged_folder`),
    replacing an earlier generated copy, never a folder with other content.

    Raises:
        DatasetError: `root` exists and holds something else.
    """
    if is_complete(root, marker_name, marker, expected):
        return root
    if root.exists() and (not root.is_dir() or not holds_only_generated(root, marker_name, list(expected))):
        raise DatasetError(
            f"{root} exists and is not a generated {what}; choose another folder for it or delete this one"
        )
    with staged_folder(root) as staging:
        generate(staging)
        atomic_write_text(staging / marker_name, json.dumps(marker, indent=2, sort_keys=True) + "\n")
    return root
