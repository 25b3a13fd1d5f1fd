"""Downloads an unpaired CycleGAN/CUT dataset into ROOT/NAME/{trainA,trainB,testA,testB}.

Usage:
    python tools/download_dataset.py horse2zebra [--root datasets] [--base-url URL]
    python tools/download_dataset.py horse2zebra --zip ~/Downloads/horse2zebra.zip

The archive `<base-url>/<name>.zip` (default: the host used by the CycleGAN and
CUT download scripts) is saved to a temporary file, extracted into a temporary
folder beside the destination, checked for the four image folders and only then
renamed into place, so an interrupted run never leaves a half dataset behind.
Cityscapes cannot be redistributed: see tools/prepare_cityscapes.py.

Exits with status 2 and one line on stderr for problems the user can fix.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psr.errors import DatasetError  # noqa: E402

DEFAULT_BASE_URL = "https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets"

# Archives with the trainA/trainB/testA/testB layout on that host (the CycleGAN
# and CUT download-script lists, minus ae_photos, which has no such layout).
DATASET_NAMES = (
    "apple2orange",
    "summer2winter_yosemite",
    "horse2zebra",
    "monet2photo",
    "cezanne2photo",
    "ukiyoe2photo",
    "vangogh2photo",
    "maps",
    "facades",
    "iphone2dslr_flower",
    "grumpifycat",
)
CITYSCAPES = "cityscapes"
LAYOUT = ("trainA", "trainB", "testA", "testB")

# Same list as psr.data.images.IMAGE_EXTENSIONS; not imported from there because
# psr.data loads TensorFlow, which a download does not need.
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")

CITYSCAPES_HELP = (
    "Cityscapes cannot be downloaded automatically (its licence forbids redistribution): register at "
    "https://www.cityscapes-dataset.com, download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip, "
    "unzip them and run: python tools/prepare_cityscapes.py --gtfine-dir GTFINE "
    "--leftimg8bit-dir LEFTIMG8BIT --output-dir datasets/cityscapes"
)


def _check_name(name: str) -> None:
    if name == CITYSCAPES:
        raise DatasetError(CITYSCAPES_HELP)
    if name not in DATASET_NAMES:
        close = difflib.get_close_matches(name, DATASET_NAMES + (CITYSCAPES,), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DatasetError(f"Unknown dataset '{name}'; {hint}valid names: {', '.join(DATASET_NAMES)}")


def _layout_problem(folder: Path) -> str | None:
    """Returns what is wrong with `folder` as a dataset, or None when it is fine."""
    for split in LAYOUT:
        split_folder = folder / split
        if not split_folder.is_dir():
            return f"missing folder {split}/"
        has_image = any(
            name.lower().endswith(_IMAGE_SUFFIXES) and not name.startswith(".")
            for _, _, names in os.walk(split_folder)
            for name in names
        )
        if not has_image:
            return f"no images in {split}/"
    return None


def _progress(done: int, total: int | None, label: str, stream) -> None:
    mib = 1024 * 1024
    if total:
        stream.write(f"\r{label}: {done / mib:.1f} / {total / mib:.1f} MiB ({100 * done // total}%)")
    else:
        stream.write(f"\r{label}: {done / mib:.1f} MiB")
    stream.flush()


def _fetch(url: str, destination: Path, manual_hint: str) -> None:
    label = f"Downloading {url}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as output:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done, last_report = 0, 0.0
            while True:
                block = response.read(1 << 20)
                if not block:
                    break
                output.write(block)
                done += len(block)
                if time.monotonic() - last_report > 0.5:
                    _progress(done, total, label, sys.stderr)
                    last_report = time.monotonic()
            _progress(done, total, label, sys.stderr)
            sys.stderr.write("\n")
            if total is not None and done != total:
                raise DatasetError(f"Download of {url} stopped after {done} of {total} bytes; {manual_hint}")
    except urllib.error.HTTPError as error:
        raise DatasetError(f"Server answered {error.code} {error.reason} for {url}; {manual_hint}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DatasetError(f"Cannot download {url} ({reason}); {manual_hint}") from None


def _extract(archive: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            base = destination.resolve()
            for member in bundle.infolist():
                if member.filename.startswith("__MACOSX/"):
                    continue
                target = (destination / member.filename).resolve()
                # Refuse entries that would land outside the folder ("zip slip").
                if base != target and base not in target.parents:
                    raise DatasetError(
                        f"Archive {archive} has an unsafe entry {member.filename!r}; not extracting it"
                    )
                bundle.extract(member, destination)
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{archive} is not a valid zip archive ({error}); download it again") from None


def _find_dataset_folder(extracted: Path, name: str) -> Path | None:
    """The folder holding trainA etc.: the archive root, NAME/, or its only folder."""
    candidates = [extracted / name, extracted]
    subfolders = [entry for entry in extracted.iterdir() if entry.is_dir() and entry.name != "__MACOSX"]
    if len(subfolders) == 1:
        candidates.append(subfolders[0])
    for candidate in candidates:
        if candidate.is_dir() and (candidate / "trainA").is_dir():
            return candidate
    return None


def download(
    name: str,
    root: str | os.PathLike = "datasets",
    base_url: str | None = None,
    zip_path: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Downloads (or unpacks) dataset `name` into `root/name`.

    Args:
        name: dataset name (see `DATASET_NAMES`); with `zip_path`, any folder name.
        root: parent folder of the datasets.
        base_url: where `<name>.zip` is fetched from (http(s):// or file://);
            defaults to `DEFAULT_BASE_URL`.
        zip_path: a local archive to unpack instead of downloading.
        force: replace `root/name` if it already exists.

    Returns:
        The dataset folder `root/name`.

    Raises:
        DatasetError: unknown name, Cityscapes, no network, a bad archive, a
            wrong layout, or an existing folder without `force`.
    """
    if zip_path is None:
        _check_name(name)
    elif not name or os.sep in name or name in (".", ".."):
        raise DatasetError(f"Dataset name {name!r} is not a plain folder name; pass e.g. horse2zebra")
    root = Path(root)
    target = root / name
    if target.exists() and not force:
        problem = _layout_problem(target)
        if problem is None:
            print(f"{target} already has trainA, trainB, testA, testB; nothing to do (--force replaces it)")
            return target
        raise DatasetError(f"{target} exists but is incomplete ({problem}); delete it or pass --force")

    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.download-", dir=root))
    try:
        if zip_path is None:
            url = f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/{name}.zip"
            archive = scratch / f"{name}.zip"
            hint = (
                f"download {url} manually (browser or another network) and run: "
                f"python tools/download_dataset.py {name} --root {root} --zip PATH/{name}.zip"
            )
            _fetch(url, archive, hint)
        else:
            archive = Path(zip_path)
            if not archive.is_file():
                raise DatasetError(f"Zip archive not found: {archive}; check the --zip path")
        extracted = scratch / "extracted"
        extracted.mkdir()
        _extract(archive, extracted)
        folder = _find_dataset_folder(extracted, name)
        if folder is None:
            raise DatasetError(
                f"Archive {archive} has no trainA/ folder "
                f"(expected {name}/trainA, trainB, testA, testB inside)"
            )
        problem = _layout_problem(folder)
        if problem is not None:
            raise DatasetError(f"Archive {archive} does not hold a usable dataset ({problem})")
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Dataset ready at {target}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download an unpaired image dataset (CycleGAN/CUT archives) into ROOT/NAME.",
        epilog=f"Names: {', '.join(DATASET_NAMES)}. {CITYSCAPES}: see tools/prepare_cityscapes.py.",
    )
    parser.add_argument("name", help="dataset name, e.g. horse2zebra")
    parser.add_argument("--root", default="datasets", help="parent of the dataset folders (default: datasets)")
    parser.add_argument(
        "--base-url", default=None, help=f"where NAME.zip is fetched from (default: {DEFAULT_BASE_URL})"
    )
    parser.add_argument(
        "--zip", dest="zip_path", default=None, help="unpack this local archive instead of downloading"
    )
    parser.add_argument("--force", action="store_true", help="replace ROOT/NAME if it exists")
    args = parser.parse_args(argv)
    try:
        download(args.name, root=args.root, base_url=args.base_url, zip_path=args.zip_path, force=args.force)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
