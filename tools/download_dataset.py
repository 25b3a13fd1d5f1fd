"""Downloads an unpaired CycleGAN/CUT dataset into ROOT/NAME/{trainA,trainB,testA,testB}, or a
multi-domain (StarGAN v2) dataset into ROOT/NAME/{train,val}/<domain>/.

Usage:
    python tools/download_dataset.py horse2zebra [--root datasets] [--base-url URL]
    python tools/download_dataset.py horse2zebra --zip ~/Downloads/horse2zebra.zip
    python tools/download_dataset.py seasons     # ComboGAN alps_seasons → ROOT/seasons/{train,val}/<season>/

`seasons` is ComboGAN's alps_seasons archive (the one the multi-modal paper's readme points to). Its
`train<X>/` and `test<X>/` folders become `train/<x>/` and `val/<x>/`, where <x> is the folder's suffix in
lower case (the archive's own names; their alphabetical order gives the domain labels, as in ComboGAN).
`weather` (IEEE DataPort, login required) cannot be fetched: the tool prints how to lay it out.

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

# Multi-domain archives: name → (archive URL, archive base name). ComboGAN's download script
# (AAnoosheh/ComboGAN datasets/download_dataset.sh) fetches https://data.vision.ee.ethz.ch/cvl/combogan/<name>.zip.
MULTIDOMAIN_DATASETS = {
    "seasons": ("https://data.vision.ee.ethz.ch/cvl/combogan/alps_seasons.zip", "alps_seasons"),
}
MULTIDOMAIN_SPLITS = {"train": "train", "test": "val"}  # archive prefix → psr split
WEATHER = "weather"
WEATHER_HELP = (
    "The weather dataset (IEEE DataPort 'five-class weather image dataset') needs a login and cannot be "
    "downloaded automatically: download it at https://ieee-dataport.org, then put each class's images into "
    "datasets/weather/train/<class>/ and datasets/weather/val/<class>/ (5 class folders, the same names in both)"
)

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
    if name == WEATHER:
        raise DatasetError(WEATHER_HELP)
    known = DATASET_NAMES + tuple(MULTIDOMAIN_DATASETS)
    if name not in known:
        close = difflib.get_close_matches(name, known + (CITYSCAPES, WEATHER), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise DatasetError(f"Unknown dataset '{name}'; {hint}valid names: {', '.join(known)}")


def _has_images(folder: Path) -> bool:
    return any(
        name.lower().endswith(_IMAGE_SUFFIXES) and not name.startswith(".")
        for _, _, names in os.walk(folder)
        for name in names
    )


def _layout_problem(folder: Path) -> str | None:
    """Returns what is wrong with `folder` as a dataset, or None when it is fine."""
    for split in LAYOUT:
        split_folder = folder / split
        if not split_folder.is_dir():
            return f"missing folder {split}/"
        if not _has_images(split_folder):
            return f"no images in {split}/"
    return None


def _domains(split_folder: Path) -> list[str]:
    return sorted(entry.name for entry in split_folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def _multidomain_problem(folder: Path) -> str | None:
    """What is wrong with `folder` as a `{train,val}/<domain>/` dataset, or None."""
    names = {}
    for split in MULTIDOMAIN_SPLITS.values():
        if not (folder / split).is_dir():
            return f"missing folder {split}/"
        names[split] = _domains(folder / split)
        if len(names[split]) < 2:
            return f"{split}/ holds {len(names[split])} domain folders, at least 2 are needed"
        for domain in names[split]:
            if not _has_images(folder / split / domain):
                return f"no images in {split}/{domain}/"
    if names["train"] != names["val"]:
        return f"train/ ({', '.join(names['train'])}) and val/ ({', '.join(names['val'])}) hold different domains"
    return None


def _arrange_multidomain(extracted: Path, base_name: str, scratch: Path) -> Path:
    """Moves `train<X>/`, `test<X>/` of the archive into `scratch/arranged/{train,val}/<x>/`."""
    candidates = [extracted / base_name, extracted]
    subfolders = [entry for entry in extracted.iterdir() if entry.is_dir() and entry.name != "__MACOSX"]
    if len(subfolders) == 1:
        candidates.append(subfolders[0])
    for candidate in candidates:  # already in the psr layout
        if candidate.is_dir() and _multidomain_problem(candidate) is None:
            return candidate
    source = next(
        (c for c in candidates if c.is_dir() and any(e.is_dir() and e.name.startswith("train") for e in c.iterdir())),
        None,
    )
    if source is None:
        raise DatasetError(f"The archive has no train*/ folders (expected {base_name}/trainA, testA, ... inside)")
    arranged = scratch / "arranged"
    for prefix, split in MULTIDOMAIN_SPLITS.items():
        for entry in sorted(source.iterdir()):
            suffix = entry.name[len(prefix):].strip("_-").lower()
            if entry.is_dir() and entry.name.startswith(prefix) and suffix:
                (arranged / split).mkdir(parents=True, exist_ok=True)
                if (arranged / split / suffix).exists():
                    raise DatasetError(
                        f"The archive has two {prefix} folders named like {entry.name}; unpack it by hand"
                    )
                os.replace(entry, arranged / split / suffix)
    return arranged


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


def _install(
    name: str,
    root: Path,
    url: str | None,
    zip_path: str | os.PathLike | None,
    force: bool,
    arrange,
    layout_problem,
    layout_text: str,
) -> Path:
    """Fetches `url` (or takes `zip_path`), extracts it beside `root/name`, arranges and checks it, moves it in."""
    target = root / name
    if target.exists() and not force:
        problem = layout_problem(target)
        if problem is None:
            print(f"{target} already has {layout_text}; nothing to do (--force replaces it)")
            return target
        raise DatasetError(f"{target} exists but is incomplete ({problem}); delete it or pass --force")

    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.download-", dir=root))
    try:
        if zip_path is None:
            archive = scratch / url.rstrip("/").rsplit("/", 1)[-1]
            hint = (
                f"download {url} manually (browser or another network) and run: "
                f"python tools/download_dataset.py {name} --root {root} --zip PATH/{archive.name}"
            )
            _fetch(url, archive, hint)
        else:
            archive = Path(zip_path)
            if not archive.is_file():
                raise DatasetError(f"Zip archive not found: {archive}; check the --zip path")
        extracted = scratch / "extracted"
        extracted.mkdir()
        _extract(archive, extracted)
        folder = arrange(extracted, archive, scratch)
        problem = layout_problem(folder)
        if problem is not None:
            raise DatasetError(f"Archive {archive} does not hold a usable dataset ({problem})")
        if target.exists():
            shutil.rmtree(target)
        os.replace(folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"Dataset ready at {target}")
    return target


def download(
    name: str,
    root: str | os.PathLike = "datasets",
    base_url: str | None = None,
    zip_path: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Downloads (or unpacks) dataset `name` into `root/name`.

    Args:
        name: dataset name (see `DATASET_NAMES` and `MULTIDOMAIN_DATASETS`); with `zip_path`, any
            folder name (a CycleGAN-layout archive unless the name is a multi-domain dataset).
        root: parent folder of the datasets.
        base_url: where the archive is fetched from (http(s):// or file://): `<base-url>/<name>.zip`,
            or `<base-url>/<archive>.zip` for multi-domain datasets; defaults to their public hosts.
        zip_path: a local archive to unpack instead of downloading.
        force: replace `root/name` if it already exists.

    Returns:
        The dataset folder `root/name`.

    Raises:
        DatasetError: unknown name, Cityscapes or Weather (manual download), no network, a bad
            archive, a wrong layout, or an existing folder without `force`.
    """
    if zip_path is None:
        _check_name(name)
    elif not name or os.sep in name or name in (".", ".."):
        raise DatasetError(f"Dataset name {name!r} is not a plain folder name; pass e.g. horse2zebra")
    root = Path(root)
    if name in MULTIDOMAIN_DATASETS:
        default_url, base_name = MULTIDOMAIN_DATASETS[name]
        url = default_url if base_url is None else f"{base_url.rstrip('/')}/{base_name}.zip"
        return _install(
            name, root, url, zip_path, force,
            lambda extracted, archive, scratch: _arrange_multidomain(extracted, base_name, scratch),
            _multidomain_problem, "train/ and val/ domain folders",
        )

    def arrange(extracted: Path, archive: Path, scratch: Path) -> Path:
        folder = _find_dataset_folder(extracted, name)
        if folder is None:
            raise DatasetError(
                f"Archive {archive} has no trainA/ folder "
                f"(expected {name}/trainA, trainB, testA, testB inside)"
            )
        return folder

    url = f"{(base_url or DEFAULT_BASE_URL).rstrip('/')}/{name}.zip"
    return _install(name, root, url, zip_path, force, arrange, _layout_problem, "trainA, trainB, testA, testB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download an unpaired image dataset (CycleGAN/CUT archives) into ROOT/NAME.",
        epilog=f"Names: {', '.join(DATASET_NAMES)}; multi-domain: {', '.join(MULTIDOMAIN_DATASETS)}. "
        f"{CITYSCAPES}: see tools/prepare_cityscapes.py. {WEATHER}: manual download (the tool says how).",
    )
    parser.add_argument("name", help="dataset name, e.g. horse2zebra")
    parser.add_argument("--root", default="datasets", help="parent of the dataset folders (default: datasets)")
    parser.add_argument(
        "--base-url", default=None,
        help=f"where NAME.zip is fetched from (default: {DEFAULT_BASE_URL}; "
        "seasons: alps_seasons.zip from ComboGAN's host)"
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
