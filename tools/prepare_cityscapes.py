"""Builds the unpaired Cityscapes dataset (labels ↔ photos) used by the paper.

Usage:
    python tools/prepare_cityscapes.py --gtfine-dir gtFine --leftimg8bit-dir leftImg8bit \
        --output-dir datasets/cityscapes

Get gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from
https://www.cityscapes-dataset.com (registration required) and unzip them. As
upstream CUT's `prepare_cityscapes_dataset.py` (spec §5 "Datasets"):
- A = leftImg8bit photos (`*_leftImg8bit.png`), B = gtFine colour label maps
  (`*_gtFine_color.png`), paired by sorted order and checked by city/frame id;
- both resized to 256×256 (bicubic, Pillow's default for `resize` since 7.0)
  and saved as JPEG, quality 100, no chroma subsampling, as `{i}_A.jpg` and
  `{i}_B.jpg`;
- train (2975 pairs) → trainA/trainB, val (500 pairs) → testA/testB.
Train with direction BtoA for labels → photos.

Exits with status 2 and one line on stderr for problems the user can fix.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psr.errors import DatasetError  # noqa: E402

PHASES = {"train": "train", "val": "test"}
PHOTO_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_color.png"


def _phase_folder(top: Path, inner: str, phase: str, option: str) -> Path:
    # Accept both the folder that holds train/ and val/ and the unzipped archive
    # folder above it (gtFine_trainvaltest/gtFine/train).
    for candidate in (top / phase, top / inner / phase):
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        f"No {phase}/ folder in {top} (nor in {top / inner}); point {option} at the unzipped {inner} folder"
    )


def _pairs(gtfine_dir: Path, leftimg8bit_dir: Path, phase: str) -> list[tuple[Path, Path]]:
    label_folder = _phase_folder(gtfine_dir, "gtFine", phase, "--gtfine-dir")
    photo_folder = _phase_folder(leftimg8bit_dir, "leftImg8bit", phase, "--leftimg8bit-dir")
    # Sorted full paths (city/frame), as upstream; the names are checked pair by pair below.
    labels = sorted(label_folder.glob(f"*/*{LABEL_SUFFIX}"))
    photos = sorted(photo_folder.glob(f"*/*{PHOTO_SUFFIX}"))
    if not photos or len(labels) != len(photos):
        raise DatasetError(
            f"Found {len(photos)} photos (*{PHOTO_SUFFIX}) and {len(labels)} colour label maps "
            f"(*{LABEL_SUFFIX}) for {phase}; both archives must be complete and unzipped"
        )
    for label, photo in zip(labels, photos):
        if label.name[: -len(LABEL_SUFFIX)] != photo.name[: -len(PHOTO_SUFFIX)]:
            raise DatasetError(f"Label map {label} does not match photo {photo}; re-extract both archives")
    return list(zip(photos, labels))


def _save_resized(source: Path, destination: Path, size: int) -> None:
    with Image.open(source) as image:
        resized = image.convert("RGB").resize((size, size), Image.BICUBIC)
    temporary = destination.with_name(f".{destination.name}.tmp")
    resized.save(temporary, format="JPEG", quality=100, subsampling=0)
    os.replace(temporary, destination)


def prepare_cityscapes(
    gtfine_dir: str | os.PathLike,
    leftimg8bit_dir: str | os.PathLike,
    output_dir: str | os.PathLike = "datasets/cityscapes",
    size: int = 256,
) -> Path:
    """Writes output_dir/{trainA,trainB,testA,testB} from the Cityscapes archives.

    Args:
        gtfine_dir: unzipped gtFine folder (holding train/, val/).
        leftimg8bit_dir: unzipped leftImg8bit folder (holding train/, val/).
        output_dir: destination dataset root.
        size: output side in pixels.

    Returns:
        `output_dir` as a `Path`.
    """
    if size <= 0:
        raise DatasetError(f"--size must be a positive number of pixels, got {size}")
    gtfine_dir, leftimg8bit_dir, output_dir = Path(gtfine_dir), Path(leftimg8bit_dir), Path(output_dir)
    for folder, option in ((gtfine_dir, "--gtfine-dir"), (leftimg8bit_dir, "--leftimg8bit-dir")):
        if not folder.is_dir():
            raise DatasetError(f"Folder not found: {folder}; pass the unzipped Cityscapes folder as {option}")
    # Check both phases before writing anything.
    pairs = {phase: _pairs(gtfine_dir, leftimg8bit_dir, phase) for phase in PHASES}
    for phase, save_phase in PHASES.items():
        photo_folder, label_folder = output_dir / f"{save_phase}A", output_dir / f"{save_phase}B"
        photo_folder.mkdir(parents=True, exist_ok=True)
        label_folder.mkdir(parents=True, exist_ok=True)
        total = len(pairs[phase])
        for index, (photo, label) in enumerate(pairs[phase]):
            _save_resized(photo, photo_folder / f"{index}_A.jpg", size)
            _save_resized(label, label_folder / f"{index}_B.jpg", size)
            if (index + 1) % 100 == 0 or index + 1 == total:
                print(f"\r{phase}: {index + 1} / {total}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    print(f"Cityscapes ready at {output_dir} (train with direction BtoA for labels -> photos)")
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the unpaired Cityscapes dataset (A = photos, B = label maps)."
    )
    parser.add_argument("--gtfine-dir", required=True, help="unzipped gtFine_trainvaltest folder")
    parser.add_argument("--leftimg8bit-dir", required=True, help="unzipped leftImg8bit_trainvaltest folder")
    parser.add_argument(
        "--output-dir", default="datasets/cityscapes", help="destination (default: datasets/cityscapes)"
    )
    parser.add_argument("--size", type=int, default=256, help="output side in pixels (default: 256)")
    args = parser.parse_args(argv)
    try:
        prepare_cityscapes(args.gtfine_dir, args.leftimg8bit_dir, args.output_dir, args.size)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
