"""Cityscapes FCN scores: label mappings, confusion matrix and scores on hand-made maps, the DRN segmenter
protocols against a step-by-step oracle, and the `fcn` / `miou` paired metrics on folders."""

import numpy as np
import pytest
from PIL import Image

from psr.errors import ConfigError, DatasetError
from psr.metrics.paired import PairedInputs, check_paired_requirements, compute_paired_metrics, split_metric_names
from psr.metrics.segmentation import (
    CITYSCAPES_MEAN, CITYSCAPES_STD, IGNORE_LABEL, PROTOCOLS, TRAIN_ID_COLORS, DRNSegmenter, fast_hist,
    read_train_ids, segmentation_hist, segmentation_scores, train_ids_from_colors, train_ids_from_label_ids,
)


def test_label_ids_map_to_train_ids():
    ids = np.array([[7, 26, 0], [33, 34, 24]])
    np.testing.assert_array_equal(train_ids_from_label_ids(ids), [[0, 13, 255], [18, 255, 11]])


def test_colors_map_to_nearest_class_or_ignore():
    colors = np.array([[(128, 64, 128), (0, 0, 0), (250, 170, 31)], [(5, 5, 5), (0, 0, 75), (119, 11, 32)]])
    np.testing.assert_array_equal(train_ids_from_colors(colors), [[0, 255, 6], [255, 14, 18]])
    assert TRAIN_ID_COLORS.shape == (19, 3)


def test_hist_and_scores_by_hand():
    label = np.array([[0, 0, 1], [1, IGNORE_LABEL, 2]])
    prediction = np.array([[0, 1, 1], [1, 0, 0]])
    hist = fast_hist(prediction, label, 3)
    np.testing.assert_array_equal(hist, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    scores = segmentation_scores(hist)
    # IoU = 1/3, 2/3, 0; pixel acc = 3 of 5 valid pixels; class acc = (1/2 + 1 + 0) / 3.
    np.testing.assert_allclose(scores["per_class_iou"], [100 / 3, 200 / 3, 0.0])
    assert scores["miou"] == pytest.approx(100 / 3)
    assert scores["pixel_acc"] == pytest.approx(60.0)
    assert scores["class_acc"] == pytest.approx(50.0)


def test_class_absent_everywhere_is_nan_in_iou_and_zero_in_class_accuracy():
    label = np.array([[0, 0, 1], [1, IGNORE_LABEL, 2]])
    prediction = np.array([[0, 1, 1], [1, 0, 0]])
    scores = segmentation_scores(fast_hist(prediction, label, 4))
    assert np.isnan(scores["per_class_iou"][3])
    assert scores["miou"] == pytest.approx(100 / 3)  # nanmean leaves class 3 out
    assert scores["class_acc"] == pytest.approx(100 * 1.5 / 4)  # class 3 counts 0
    assert scores["pixel_acc"] == pytest.approx(60.0)


def _small_drn(seed=0):
    import keras

    from psr.models.drn import build_drn_seg

    keras.utils.set_random_seed(seed)
    model = build_drn_seg("drn_d_22", 19)
    # Spread the class scores of the random network so that several classes win somewhere.
    seg = model.get_layer("seg")
    seg.kernel.assign(seg.kernel.numpy() * 50)
    return model


def _oracle_prediction(model, photo, protocol, label_shape):
    import tensorflow as tf

    if protocol.input_size is not None:
        photo = np.asarray(Image.fromarray(photo).resize(protocol.input_size, Image.BICUBIC))
    pixels = (photo[None].astype(np.float32) / 255.0 - np.float32(CITYSCAPES_MEAN)) / np.float32(CITYSCAPES_STD)
    log_probs = model(pixels, training=False)
    if protocol.resize_to_labels:
        log_probs = tf.image.resize(log_probs, label_shape, method="bilinear")
    return np.argmax(np.asarray(log_probs)[0], axis=-1)


@pytest.fixture(scope="module")
def model():
    return _small_drn()


def _write_scene(folder_photos, folder_labels, stem, rng, photo_size, label_size, label_format):
    photo = rng.integers(0, 256, (photo_size[1], photo_size[0], 3), dtype=np.uint8)
    Image.fromarray(photo).save(folder_photos / f"{stem}.png")
    train_ids = rng.integers(0, 19, (label_size[1], label_size[0]))
    if label_format == "color":
        Image.fromarray(TRAIN_ID_COLORS[train_ids].astype(np.uint8)).save(folder_labels / f"{stem}.png")
    else:
        Image.fromarray(train_ids.astype(np.uint8), mode="L").save(folder_labels / f"{stem}.png")
    return photo, train_ids


def test_drn_d_22_protocol_matches_oracle(model, tmp_path):
    # Single-modal protocol: photos 64×64 → 256×128 network input → 128×256 prediction; colour GT resized to it.
    rng = np.random.default_rng(0)
    photos, labels = tmp_path / "fake", tmp_path / "labels"
    photos.mkdir(), labels.mkdir()
    protocol = PROTOCOLS["drn_d_22"]
    expected = np.zeros((19, 19), np.int64)
    for i in range(2):
        photo, _ = _write_scene(photos, labels, f"{i}_B", rng, (64, 64), (256, 128), "color")
        gt = read_train_ids(str(labels / f"{i}_B.png"), "color")
        expected += fast_hist(_oracle_prediction(model, photo, protocol, None), gt, 19)
    segmenter = DRNSegmenter(model, protocol)
    pairs = [(str(photos / f"{i}_B.png"), str(labels / f"{i}_B.png")) for i in range(2)]
    hist = segmentation_hist(pairs, segmenter, "color")
    assert hist.sum() == 2 * 128 * 256
    np.testing.assert_array_equal(hist, expected)
    results = compute_paired_metrics(
        ["fcn", "miou"], PairedInputs(str(photos), labels_dir=str(labels)), segmenter=segmenter,
        label_format="color",
    )
    scores = segmentation_scores(expected)
    assert results == pytest.approx({"fcn_pixel_acc": scores["pixel_acc"], "fcn_class_acc": scores["class_acc"],
                                     "fcn_miou": scores["miou"], "miou": scores["miou"]})


def test_drn_d_105_protocol_resizes_log_probabilities_to_labels(model, tmp_path):
    # The compression protocol's steps (here on the small DRN-D-22 model): photo as is, scores → label size.
    rng = np.random.default_rng(1)
    photos, labels = tmp_path / "fake", tmp_path / "labels"
    photos.mkdir(), labels.mkdir()
    photo, train_ids = _write_scene(photos, labels, "a", rng, (32, 32), (64, 48), "train_ids")
    protocol = PROTOCOLS["drn_d_105"]
    expected = fast_hist(_oracle_prediction(model, photo, protocol, (48, 64)), train_ids, 19)
    hist = segmentation_hist([(str(photos / "a.png"), str(labels / "a.png"))], DRNSegmenter(model, protocol),
                             "train_ids")
    np.testing.assert_array_equal(hist, expected)
    assert hist.sum() == 48 * 64


def test_requirements_fail_in_one_line_before_translation(tmp_path):
    assert split_metric_names(["fid", "lpips", "fcn"]) == (["fid"], ["lpips", "fcn"])
    with pytest.raises(ConfigError, match="valid metrics: .*fcn.*miou") as error:
        split_metric_names(["fid", "mIoU"])
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="ground-truth labels, which this run does not have"):
        check_paired_requirements(["miou"], inputs_have_labels=False, segmentation_weights=None)
    with pytest.raises(ConfigError, match="drn_d_22_cityscapes.pth \\(not given\\)"):
        check_paired_requirements(["fcn"], inputs_have_labels=True)
    with pytest.raises(ConfigError, match="alexnet-owt-7be5be79.pth \\(not found: .*nope.pth\\)"):
        check_paired_requirements(["lpips"], False, lpips_alexnet_weights=str(tmp_path / "nope.pth"))


def test_missing_label_and_wrong_label_format_are_one_line_errors(model, tmp_path):
    photos, labels = tmp_path / "fake", tmp_path / "labels"
    photos.mkdir(), labels.mkdir()
    _write_scene(photos, labels, "0_B", np.random.default_rng(2), (32, 32), (32, 32), "color")
    (labels / "0_B.png").rename(labels / "other.png")
    with pytest.raises(DatasetError, match="No label map for .*0_B.png"):
        compute_paired_metrics(["miou"], PairedInputs(str(photos), labels_dir=str(labels)),
                               segmenter=DRNSegmenter(model, PROTOCOLS["drn_d_22"]))
    with pytest.raises(DatasetError, match="not a single-channel id map"):
        read_train_ids(str(labels / "other.png"), "label_ids")
