"""psr.data.multidomain against NumPy/PIL re-statements of the official StarGAN v2 data loader."""

import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from psr.data.multidomain import (
    CROP_TRIES,
    Domain,
    MultiDomainTrainingData,
    augment_image,
    discover_domains,
    random_resized_crop_box,
    reference_dataset,
    reference_partners,
    source_dataset,
    steps_per_epoch,
    training_dataset,
    val_images,
)
from psr.errors import DatasetError


# === Helpers ===


def _write_solid_domains(root, sizes, split="train", side=4):
    """Domains of solid-grey PNGs; grey value = a unique id per file, so a pixel names its source file.

    Returns {grey value: (domain label, file path)}.
    """
    owners = {}
    value = 10
    for label, (name, count) in enumerate(sorted(sizes.items())):
        folder = os.path.join(root, split, name)
        os.makedirs(folder, exist_ok=True)
        for index in range(count):
            path = os.path.join(folder, f"{index:03d}.png")
            Image.fromarray(np.full((side, side, 3), value, np.uint8)).save(path)
            owners[value] = (label, path)
            value += 3  # 3 apart: robust to any rounding in the resize
    return owners


def _grey_ids(images):
    """The grey value of each solid image in a [-1, 1] batch."""
    pixels = np.round((np.asarray(images) + 1.0) * 127.5).astype(np.int64)
    assert (pixels == pixels[:, :1, :1, :1]).all()
    return pixels[:, 0, 0, 0]


def _torchvision_box(height, width, uniforms, scale=(0.8, 1.0), ratio=(0.9, 1.1)):
    """NumPy/Python re-statement of torchvision RandomResizedCrop.get_params, fed the same uniforms."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for u_area, u_ratio, u_top, u_left in np.asarray(uniforms, np.float64):
        target_area = area * (scale[0] + u_area * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u_ratio * (log_ratio[1] - log_ratio[0]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = min(int(u_top * (height - h + 1)), height - h)
            left = min(int(u_left * (width - w + 1)), width - w)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# === Crop box ===


def test_crop_box_matches_torchvision_recipe_on_many_shapes():
    rng = np.random.RandomState(0)
    sizes = [(32, 32), (256, 256), (200, 300), (300, 200), (10, 100), (100, 10), (7, 7), (1, 1), (50, 53)]
    sizes += [tuple(rng.randint(1, 400, size=2)) for _ in range(60)]
    for height, width in sizes:
        for _ in range(5):
            uniforms = rng.uniform(size=(CROP_TRIES, 4)).astype(np.float32)
            box = random_resized_crop_box(tf.constant(height), tf.constant(width), tf.constant(uniforms))
            assert tuple(box.numpy()) == _torchvision_box(height, width, uniforms), (height, width)


def test_crop_box_hand_computed():
    # All zeros: area 0.8·10⁴, ratio 0.9 → w = round(√7200) = 85, h = round(√8888.9) = 94, at the corner.
    box = random_resized_crop_box(tf.constant(100), tf.constant(100), tf.zeros([CROP_TRIES, 4]))
    assert box.numpy().tolist() == [0, 0, 94, 85]
    # 10×100 can hold no box of area ≥ 800 with ratio ≤ 1.1 → centre fallback h = 10, w = round(11) = 11.
    box = random_resized_crop_box(tf.constant(10), tf.constant(100), tf.fill([CROP_TRIES, 4], 0.5))
    assert box.numpy().tolist() == [0, 44, 10, 11]


# === Augmentation ===


def _uniforms(crop: bool, flip: bool, tries=None):
    values = np.full(4 * CROP_TRIES + 2, 0.5, np.float32) if tries is None else np.concatenate(
        [tries.ravel(), [0.5, 0.5]]).astype(np.float32)
    values[-2] = 0.25 if crop else 0.75
    values[-1] = 0.25 if flip else 0.75
    return values


def test_augment_image_against_pil(tmp_path):
    pixels = np.random.RandomState(1).randint(0, 256, size=(37, 45, 3)).astype(np.uint8)
    path = str(tmp_path / "x.png")
    Image.fromarray(pixels).save(path)
    size = 16

    def expect(box, flip):
        top, left, height, width = box
        image = Image.fromarray(pixels).crop((left, top, left + width, top + height))
        out = np.asarray(image.resize((size, size), Image.BILINEAR)).astype(np.float32) / 127.5 - 1.0
        return out[:, ::-1] if flip else out

    whole = (0, 0, 37, 45)
    got = augment_image(tf.constant(path), size, tf.constant(_uniforms(crop=False, flip=False))).numpy()
    np.testing.assert_array_equal(got, expect(whole, False))
    got = augment_image(tf.constant(path), size, tf.constant(_uniforms(crop=False, flip=True))).numpy()
    np.testing.assert_array_equal(got, expect(whole, True))
    tries = np.random.RandomState(2).uniform(size=(CROP_TRIES, 4)).astype(np.float32)
    box = _torchvision_box(37, 45, tries)
    assert box != whole
    got = augment_image(tf.constant(path), size, tf.constant(_uniforms(crop=True, flip=True, tries=tries))).numpy()
    np.testing.assert_array_equal(got, expect(box, True))
    assert got.dtype == np.float32 and got.min() >= -1.0 and got.max() <= 1.0


# === Training streams ===


def test_sampling_is_class_balanced_and_uniform_within_a_domain(tmp_path):
    sizes = {"a": 2, "b": 5, "c": 13}
    owners = _write_solid_domains(str(tmp_path), sizes)
    domains = discover_domains(str(tmp_path), "train", 3)
    batch, steps = 20, 150
    n = batch * steps
    ids = np.concatenate([_grey_ids(x) for x, _ in source_dataset(domains, 4, batch, seed=5, num_steps=steps,
                                                                        augment=False)])
    labels = np.array([owners[value][0] for value in ids])
    counts = np.bincount(labels, minlength=3)
    # Each label ~ Binomial(n, 1/3): 5 standard deviations (two-sided p ≈ 6e-7 each).
    p = 1 / 3
    assert np.all(np.abs(counts - n * p) <= 5 * math.sqrt(n * p * (1 - p))), counts
    # Proportional sampling would give domain a only 2/20 of the draws (300 ± 16).
    assert counts[0] > n * 0.25
    # Within a domain of size m every file ~ Binomial(n, 1/(3m)).
    for label, (name, m) in enumerate(sorted(sizes.items())):
        p_file = 1 / (3 * m)
        bound = 5 * math.sqrt(n * p_file * (1 - p_file))
        files = [value for value, (owner, _) in owners.items() if owner == label]
        per_file = np.array([(ids == value).sum() for value in files])
        assert np.all(np.abs(per_file - n * p_file) <= bound), (name, per_file)


def test_labels_match_images_and_reference_partner_is_fixed(tmp_path):
    owners = _write_solid_domains(str(tmp_path), {"a": 3, "b": 4, "c": 6})
    domains = discover_domains(str(tmp_path), "train")
    partners = reference_partners(domains, seed=3)
    flat = [path for domain in domains for path in domain.files]
    value_of = {path: value for value, (_, path) in owners.items()}
    seen = {}
    for start in (0, 40):  # two "epochs" far apart in the stream
        data = reference_dataset(domains, 4, 8, seed=3, start_step=start, num_steps=20, augment=False)
        for x_ref, x_ref2, y_trg in data:
            ref, ref2, y_trg = _grey_ids(x_ref), _grey_ids(x_ref2), y_trg.numpy()
            for a, b, label in zip(ref, ref2, y_trg):
                assert owners[a][0] == label and owners[b][0] == label  # same domain, right label
                assert seen.setdefault(a, b) == b  # one partner per image, in every epoch
                assert value_of[flat[partners[flat.index(owners[a][1])]]] == b
    assert len(seen) == 13  # every file was drawn at least once
    # Partners form a permutation within each domain.
    for domain, offset in zip(domains, np.cumsum([0] + [len(d.files) for d in domains])[:-1]):
        block = partners[offset : offset + len(domain.files)]
        assert sorted(block) == list(range(offset, offset + len(domain.files)))
    # The permutation depends on the seed (a different seed gives another one for these sizes).
    assert not np.array_equal(partners, reference_partners(domains, seed=4))

    for (x, y_org), _ in training_dataset(domains, 4, 8, seed=3, num_steps=5, augment=False):
        assert [owners[value][0] for value in _grey_ids(x)] == y_org.numpy().tolist()


def test_shapes_ranges_drop_remainder_and_resume(tmp_path):
    rng = np.random.RandomState(0)
    for name, count in (("x", 3), ("y", 4)):
        os.makedirs(tmp_path / "train" / name)
        for index in range(count):
            pixels = rng.randint(0, 256, size=(20 + index, 24, 3)).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "train" / name / f"{index}.jpg", quality=95)
    data = MultiDomainTrainingData(tmp_path, image_size=8, batch_size=3, seed=11, num_domains=2)
    assert data.steps_per_epoch == 7 // 3 == 2
    assert data.describe()["train_images_per_domain"] == {"x": 3, "y": 4}
    dataset = data.dataset(num_steps=data.steps_per_epoch)
    (x_spec, y_spec), (r_spec, r2_spec, t_spec) = dataset.element_spec
    assert x_spec.shape == r_spec.shape == r2_spec.shape == (3, 8, 8, 3)  # static batch: drop_remainder
    assert y_spec.shape == t_spec.shape == (3,) and y_spec.dtype == tf.int32
    batches = list(dataset)
    assert len(batches) == 2
    for (x, y), (r, r2, t) in batches:
        for images in (x, r, r2):
            assert images.dtype == tf.float32 and np.all(np.abs(images.numpy()) <= 1.0)
        assert set(y.numpy()) <= {0, 1} and set(t.numpy()) <= {0, 1}

    # Reproducible, and resumable: batches from step 2 on equal a fresh pipeline started at step 2.
    first = list(data.dataset(num_steps=5))
    again = list(MultiDomainTrainingData(tmp_path, 8, 3, seed=11).dataset(start_step=2, num_steps=3))
    for (a, b) in zip(first[2:], again):
        for left, right in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(left.numpy(), right.numpy())
    # The endless stream starts with the same batches; another seed differs.
    endless = next(iter(data.dataset()))
    np.testing.assert_array_equal(endless[0][0].numpy(), first[0][0][0].numpy())
    other = next(iter(MultiDomainTrainingData(tmp_path, 8, 3, seed=12).dataset()))
    assert not np.array_equal(other[0][0].numpy(), endless[0][0].numpy())
    # Source and reference draw from different streams.
    assert not np.array_equal(first[0][0][0].numpy(), first[0][1][0].numpy())


def test_augmentation_crops_and_flips_about_half_the_images(tmp_path):
    # A left-right ramp: a flip reverses it, a crop changes the values at the borders.
    ramp = np.repeat(np.repeat(np.linspace(0, 250, 32).astype(np.uint8)[None, :, None], 32, 0), 3, 2)
    for name in ("a", "b"):
        os.makedirs(tmp_path / "train" / name)
        Image.fromarray(ramp).save(tmp_path / "train" / name / "0.png")
    domains = discover_domains(tmp_path, "train")
    n = 400
    images = np.concatenate([x.numpy() for x, _ in source_dataset(domains, 32, 2, seed=1, num_steps=n // 2)])
    plain = ramp.astype(np.float32) / 127.5 - 1
    flipped = np.array([image[0, 0, 0] > image[0, -1, 0] for image in images])
    unchanged = np.array([np.array_equal(image, plain) or np.array_equal(image, plain[:, ::-1]) for image in images])
    # Flip ~ Binomial(400, 1/2) and crop ~ Binomial(400, 1/2): 5 standard deviations = 50 (a crop box
    # covers the whole 32×32 image only for area ≈ 1 and ratio ≈ 1, a small share of the draws).
    assert abs(flipped.sum() - n / 2) <= 50
    assert abs((~unchanged).sum() - n / 2) <= 50


# === Validation ===


def test_val_images_resize_bilinear_in_order(tmp_path):
    rng = np.random.RandomState(3)
    arrays = []
    for split in ("train", "val"):
        for name in ("p", "q"):
            os.makedirs(tmp_path / split / name)
            for index in range(5):
                pixels = rng.randint(0, 256, size=(12, 20, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / name / f"{index}.PNG")
                if split == "val" and name == "q":
                    arrays.append(pixels)
    domains = discover_domains(tmp_path, "val", 2)
    dataset, files = val_images(domains[1], 8, batch_size=2)
    assert files == domains[1].files
    got = np.concatenate([batch.numpy() for batch in dataset])
    expected = np.stack([np.asarray(Image.fromarray(a).resize((8, 8), Image.BILINEAR)) for a in arrays])
    np.testing.assert_array_equal(got, expected.astype(np.float32) / 127.5 - 1)
    assert [batch.shape[0] for batch in dataset] == [2, 2, 1]

    shuffled, order = val_images(domains[1], 8, batch_size=2, shuffle_seed=0, drop_remainder=True)
    assert len(order) == 4 and set(order) < set(files)
    assert [batch.shape[0] for batch in shuffled] == [2, 2]
    index = files.index(order[0])
    np.testing.assert_array_equal(next(iter(shuffled)).numpy()[0], got[index])
    with pytest.raises(DatasetError, match="fewer than one batch"):
        val_images(domains[1], 8, batch_size=6, drop_remainder=True)


# === Errors ===


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


def test_discovery_errors(tmp_path):
    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path / "nowhere", "train")
    assert "not found" in _one_line(error)

    _write_solid_domains(str(tmp_path), {"summer": 2, "winter": 2, "autumn": 1})
    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path, "val")
    assert "no val/ folder" in _one_line(error)

    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path, "train", num_domains=4)
    assert "3 domain folders (autumn, summer, winter)" in _one_line(error) and "4 are expected" in str(error.value)

    domains = discover_domains(tmp_path, "train", num_domains=3)
    assert [domain.name for domain in domains] == ["autumn", "summer", "winter"]
    assert all(isinstance(domain, Domain) for domain in domains)

    _write_solid_domains(str(tmp_path), {"summer": 1, "winter": 1, "spring": 1}, split="val")
    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path, "train")
    assert "differ between" in _one_line(error) and "spring" in str(error.value)
    os.rename(tmp_path / "val" / "spring", tmp_path / "val" / "autumn")
    assert len(discover_domains(tmp_path, "val", 3)) == 3

    os.makedirs(tmp_path / "train" / "zzz")
    (tmp_path / "train" / "zzz" / "notes.txt").write_text("x")
    os.makedirs(tmp_path / "val" / "zzz")
    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path, "train")
    assert "zzz holds no PNG or JPEG" in _one_line(error)
    (tmp_path / "train" / "zzz" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as error:
        discover_domains(tmp_path, "train")
    assert "Unreadable image" in _one_line(error) and "bad.png" in str(error.value)


def test_batch_larger_than_dataset(tmp_path):
    _write_solid_domains(str(tmp_path), {"a": 2, "b": 2})
    domains = discover_domains(tmp_path, "train")
    assert steps_per_epoch(domains, 3) == 1
    with pytest.raises(DatasetError) as error:
        source_dataset(domains, 4, 5, seed=0)
    assert "lower batch_size" in _one_line(error)


def test_keras_fit_gets_one_element_per_iteration_and_continues_the_stream_across_epochs(tmp_path):
    import keras

    _write_solid_domains(str(tmp_path), {"a": 3, "b": 4})
    domains = discover_domains(tmp_path, "train")

    class Recorder(keras.Model):
        """train_step unpacks the documented element and sums what it saw."""

        def __init__(self):
            super().__init__()
            self.seen = tf.Variable(0.0, dtype=tf.float64)
            self.steps = tf.Variable(0, dtype=tf.int64)

        def train_step(self, data):
            (x, y_org), (x_ref, x_ref2, y_trg) = data
            total = tf.reduce_sum(tf.cast(x, tf.float64)) + 10.0 * tf.reduce_sum(tf.cast(y_trg, tf.float64))
            self.seen.assign_add(total + tf.reduce_sum(tf.cast(x_ref2, tf.float64)))
            self.steps.assign_add(1)
            return {"steps": self.steps}

    model = Recorder()
    model.compile()
    model.fit(training_dataset(domains, 4, 2, seed=9), epochs=2, steps_per_epoch=2, verbose=0, shuffle=False)
    expected = 0.0
    for (x, _), (_, x_ref2, y_trg) in training_dataset(domains, 4, 2, seed=9, num_steps=4):
        expected += x.numpy().astype(np.float64).sum() + x_ref2.numpy().astype(np.float64).sum()
        expected += 10.0 * y_trg.numpy().sum()
    assert int(model.steps.numpy()) == 4
    # Epoch 2 saw batches 2 and 3 of the stream (not 0 and 1 again); float32 sums of ±1 values are exact.
    assert model.seen.numpy() == pytest.approx(expected, abs=1e-6)
