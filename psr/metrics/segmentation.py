"""Cityscapes FCN scores (pixel accuracy, class accuracy, mean IoU) from a DRN segmentation network.

Two protocols, as the papers evaluate (spec single_modal §6, compression §6):

- `drn_d_22` (single-modal, Hneg_SRC `get_mAP.py`): each translated photo is
  resized to 256 wide × 128 high (PIL bicubic), scaled to [0, 1] and normalised
  with the Cityscapes mean/std; DRN-D-22's ×8 up layer gives 128×256
  log-probabilities, arg-max = prediction. Ground truth is resized to 256×128.
- `drn_d_105` (compression, gan-compression `metric/mIoU_score.py`): the photo
  at its own size (256×256) through DRN-D-105; the log-probabilities are
  resized bilinearly to the ground-truth size (the original 2048×1024 labels),
  then arg-max. (The official code resizes with PIL's bilinear filter; psr uses
  `tf.image.resize(bilinear)`, the same half-pixel triangle filter when enlarging.)

Labels: 19 trainIds, 255 = ignore. Ground truth may be given as Cityscapes
labelIds (`*_gtFine_labelIds.png`, mapped with the official labelId → trainId
table), as trainIds, or as colour label maps (the `testB` images of psr's
Cityscapes dataset), mapped to the nearest of the 19 class colours or black
(= ignore) by L1 distance over RGB, as `get_mAP.py` does.

Scores over the confusion matrix `hist` of all images (`fast_hist`, rows = GT):
- mIoU = nanmean over classes of diag / (row + column − diag): a class absent
  from both GT and prediction is NaN and left out (the DRN evaluations);
- pixel accuracy = trace / (pixels with a valid GT label);
- class accuracy = mean over the 19 classes of diag / row, a class without GT
  pixels counting 0 (pix2pix's `get_scores` and `get_Acc.py`, whose +1e-12
  turns 0/0 into 0).
All three are reported in percent. Deviation: `get_Acc.py` read its colour maps
in BGR and divided by all pixels (ignored ones included); psr does neither, so
its pAcc/cAcc are the corrected definitions (spec single_modal §6 explains why
the published numbers cannot be reproduced exactly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from psr.errors import CheckpointError, ConfigError, DatasetError
from psr.registry import LABEL_FORMATS

NUM_CLASSES = 19
IGNORE_LABEL = 255
CITYSCAPES_MEAN = (0.29010095242892997, 0.32808144844279574, 0.28696394422942517)
CITYSCAPES_STD = (0.1829540508368939, 0.18656561047509476, 0.18447508988480435)

TRAIN_ID_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
TRAIN_ID_COLORS = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.int32)

# cityscapesScripts labels.py: labelId -> trainId for the 19 evaluated classes; every other id is ignored.
_LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_LABEL, dtype=np.uint8)
for _label_id, _train_id in _LABEL_ID_TO_TRAIN_ID.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id

SEGMENTATION_WEIGHTS = {"drn_d_22": "drn_d_22_cityscapes.pth", "drn_d_105": "drn-d-105_ms_cityscapes.pth"}
WEIGHTS_SOURCE = (
    "DRN-D-22: the Cityscapes model of fyu/drn (used by pix2pix/CUT/Hneg_SRC get_mAP.py); "
    "DRN-D-105: drn-d-105_ms_cityscapes.pth of mit-han-lab/gan-compression"
)


# === Labels ===


def train_ids_from_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds `[H, W]` (0..33) -> trainIds (0..18, 255 = ignore)."""
    label_ids = np.asarray(label_ids)
    if label_ids.ndim != 2:
        raise ValueError(f"Expected a [H, W] label map. Received: shape={label_ids.shape}")
    return LABEL_ID_TO_TRAIN_ID[np.clip(label_ids.astype(np.int64), 0, 255)]


def train_ids_from_colors(colors: np.ndarray) -> np.ndarray:
    """Colour label map `[H, W, 3]` -> trainIds: nearest of the 19 class colours or black (ignore), L1 over RGB."""
    colors = np.asarray(colors)
    if colors.ndim != 3 or colors.shape[-1] != 3:
        raise ValueError(f"Expected a [H, W, 3] colour label map. Received: shape={colors.shape}")
    palette = np.concatenate([TRAIN_ID_COLORS, np.zeros((1, 3), np.int32)])
    distance = np.abs(colors.astype(np.int32)[:, :, None, :] - palette[None, None]).sum(-1)
    nearest = distance.argmin(-1)  # ties go to the lower index, as np.argmin in get_mAP.py
    return np.where(nearest == NUM_CLASSES, IGNORE_LABEL, nearest).astype(np.uint8)


def fast_hist(prediction: np.ndarray, label: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Confusion matrix `[n, n]` (rows = ground truth, columns = prediction) over pixels with 0 <= label < n."""
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    label = np.asarray(label).reshape(-1).astype(np.int64)
    if prediction.shape != label.shape:
        raise ValueError(f"Prediction and label sizes differ. Received: {prediction.size} and {label.size}")
    valid = (label >= 0) & (label < num_classes)
    return np.bincount(
        num_classes * label[valid] + prediction[valid], minlength=num_classes ** 2
    ).reshape(num_classes, num_classes)


def segmentation_scores(hist: np.ndarray) -> dict:
    """Pixel accuracy, class accuracy, mIoU (percent) and per-class IoU of a confusion matrix (see module doc)."""
    hist = np.asarray(hist, np.float64)
    diagonal = np.diag(hist)
    gt_pixels = hist.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diagonal / (gt_pixels + hist.sum(0) - diagonal)
        class_acc = np.where(gt_pixels > 0, diagonal / np.where(gt_pixels > 0, gt_pixels, 1), 0.0)
    total = hist.sum()
    return {
        "pixel_acc": 100.0 * diagonal.sum() / total if total > 0 else float("nan"),
        "class_acc": 100.0 * float(np.mean(class_acc)),
        "miou": 100.0 * float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        "per_class_iou": 100.0 * iou,
    }


# === Segmenter ===


@dataclass(frozen=True)
class SegmentationProtocol:
    """How translated photos are segmented.

    Attributes:
        network: `"drn_d_22"` or `"drn_d_105"`.
        input_size: (width, height) the photo is resized to (PIL bicubic) before
            the network; `None` = as is.
        resize_to_labels: resize the log-probabilities to the label size
            (bilinear) before the arg-max; otherwise the labels are resized to the
            prediction size.
    """

    network: str
    input_size: tuple | None
    resize_to_labels: bool


PROTOCOLS = {
    "drn_d_22": SegmentationProtocol("drn_d_22", (256, 128), resize_to_labels=False),
    "drn_d_105": SegmentationProtocol("drn_d_105", None, resize_to_labels=True),
}


class DRNSegmenter:
    """Predicts trainIds of uint8 photos with a DRNSeg Keras model and a protocol.

    Args:
        model: `psr.models.drn.build_drn_seg(...)` with weights.
        protocol: a `SegmentationProtocol` (see `PROTOCOLS`).
    """

    def __init__(self, model, protocol: SegmentationProtocol):
        import tensorflow as tf

        self.model = model
        self.protocol = protocol
        mean = np.asarray(CITYSCAPES_MEAN, np.float32)
        std = np.asarray(CITYSCAPES_STD, np.float32)

        @tf.function(reduce_retracing=True)
        def forward(pixels, label_size):
            log_probs = model((tf.cast(pixels, tf.float32) / 255.0 - mean) / std, training=False)
            if protocol.resize_to_labels:
                log_probs = tf.image.resize(log_probs, label_size, method="bilinear", antialias=False)
            return tf.argmax(log_probs, axis=-1, output_type=tf.int32)

        self._forward = forward

    def prepare(self, photo: np.ndarray) -> np.ndarray:
        """The photo as the network gets it (resized by the protocol), uint8."""
        from PIL import Image

        if self.protocol.input_size is None or photo.shape[1::-1] == tuple(self.protocol.input_size):
            return photo
        return np.asarray(Image.fromarray(photo).resize(tuple(self.protocol.input_size), Image.BICUBIC))

    def __call__(self, photo: np.ndarray, label_size: tuple) -> np.ndarray:
        """trainIds `[h, w]` of one uint8 photo `[H, W, 3]`; `label_size` = (height, width) of its labels."""
        import tensorflow as tf

        pixels = self.prepare(photo)
        if pixels.shape[0] % 8 or pixels.shape[1] % 8:
            raise DatasetError(
                f"DRN needs image sides that are multiples of 8, got {pixels.shape[1]}×{pixels.shape[0]}: "
                "evaluate at --image-size 256"
            )
        prediction = self._forward(tf.constant(pixels[None]), tf.constant(label_size, tf.int32))
        return prediction.numpy()[0]


def build_segmenter(network: str, weights: str | None) -> DRNSegmenter:
    """A `DRNSegmenter` for `network` (`drn_d_22` / `drn_d_105`) loaded from its `.pth` file.

    Raises:
        ConfigError: unknown network or no weights file given.
        CheckpointError: the weights file is missing or does not match.
    """
    from psr.models.drn import drn_seg_from_torch

    if network not in PROTOCOLS:
        raise ConfigError(
            f"Unknown segmentation network {network!r}: use eval.segmentation_network drn_d_22 or drn_d_105"
        )
    filename = SEGMENTATION_WEIGHTS[network]
    if weights is None:
        raise ConfigError(
            f"fcn/miou need the {network} Cityscapes weights: download {filename} ({WEIGHTS_SOURCE}) and pass "
            "--segmentation-weights PATH (eval.segmentation_weights)"
        )
    if not os.path.isfile(os.fspath(weights)):
        raise CheckpointError(
            f"Segmentation weights not found: {weights}; download {filename} ({WEIGHTS_SOURCE}) and pass "
            "--segmentation-weights PATH"
        )
    return DRNSegmenter(drn_seg_from_torch(weights, network), PROTOCOLS[network])


# === Folders ===


def read_train_ids(path: str, label_format: str) -> np.ndarray:
    """trainIds `[H, W]` of one ground-truth file in `label_format` (see `LABEL_FORMATS`)."""
    from PIL import Image

    if label_format not in LABEL_FORMATS:
        raise ConfigError(
            f"Unknown label format {label_format!r}: use one of {', '.join(LABEL_FORMATS)} (eval.label_format)"
        )
    try:
        with Image.open(path) as image:
            if label_format == "color":
                return train_ids_from_colors(np.asarray(image.convert("RGB")))
            if image.mode not in ("L", "P", "I", "I;16"):
                raise DatasetError(
                    f"{path} is a {image.mode} image, not a single-channel id map: pass --label-format color "
                    "for colour label maps"
                )
            ids = np.asarray(image)
    except OSError as error:
        raise DatasetError(f"Cannot read label map {path} ({error}): replace the file") from None
    return train_ids_from_label_ids(ids) if label_format == "label_ids" else ids.astype(np.int64)


def _resize_train_ids(ids: np.ndarray, size: tuple, label_format: str, path: str) -> np.ndarray:
    """Resizes GT to (height, width): colour maps before the palette lookup, id maps nearest."""
    from PIL import Image

    if label_format == "color":
        # get_mAP.py resizes the colour map with PIL's default (bicubic) and then looks up the palette.
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((size[1], size[0]), Image.BICUBIC)
        return train_ids_from_colors(np.asarray(resized))
    image = Image.fromarray(np.asarray(ids, np.uint8))
    return np.asarray(image.resize((size[1], size[0]), Image.NEAREST)).astype(np.int64)


def segmentation_hist(
    pairs: Sequence[tuple[str, str]], segmenter: DRNSegmenter, label_format: str = "color",
    num_classes: int = NUM_CLASSES,
) -> np.ndarray:
    """Confusion matrix summed over (photo, ground-truth label file) pairs."""
    from psr.data.images import read_image

    if not pairs:
        raise DatasetError("No image/label pairs to segment: check the translations and the label folder")
    hist = np.zeros((num_classes, num_classes), np.int64)
    for photo_path, label_path in pairs:
        labels = read_train_ids(label_path, label_format)
        photo = read_image(photo_path)
        prediction = segmenter(photo, labels.shape)
        if labels.shape != prediction.shape:  # drn_d_22: GT goes to the 128×256 prediction size
            labels = _resize_train_ids(labels, prediction.shape, label_format, label_path)
        hist += fast_hist(prediction, labels, num_classes)
    return hist
