import os

import numpy as np
import pytest
from PIL import Image

from psr.data.images import IMAGE_EXTENSIONS, list_images, read_image, save_image, to_uint8, verify_images
from psr.errors import DatasetError


def _noise(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=shape).astype(np.uint8)


# === list_images ===


def test_list_images_is_sorted_recursive_and_case_insensitive(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "notes.txt", ".hidden.png", "d.bmp"]:
        Image.fromarray(_noise((4, 4, 3))).save(tmp_path / name, format="PNG")
    found = list_images(tmp_path)
    expected = sorted(str(tmp_path / name) for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "d.bmp"])
    assert found == expected


def test_list_images_skips_macos_resource_folders(tmp_path):
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "a.jpg").write_bytes(b"resource fork")
    Image.fromarray(_noise((4, 4, 3))).save(tmp_path / "a.png")
    assert list_images(tmp_path) == [str(tmp_path / "a.png")]


def test_missing_folder_error_names_folder_role_and_layout(tmp_path):
    missing = tmp_path / "trainA"
    with pytest.raises(DatasetError) as caught:
        list_images(missing, role="training images of domain A")
    message = str(caught.value)
    assert str(missing) in message
    assert "training images of domain A" in message
    assert "trainA, trainB, testA, testB" in message
    assert "\n" not in message


def test_folder_without_images_error_says_what_was_found(tmp_path):
    for name in ["a.txt", "b.txt", "c.gif"]:
        (tmp_path / name).write_text("x")
    with pytest.raises(DatasetError) as caught:
        list_images(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "3 files" in message and ".txt" in message and ".gif" in message
    assert ".jpg" in message and ".png" in message
    assert "\n" not in message


def test_empty_folder_error(tmp_path):
    with pytest.raises(DatasetError, match="empty"):
        list_images(tmp_path)


def test_image_extensions_cover_the_required_ones():
    assert {".jpg", ".jpeg", ".png", ".bmp"} <= set(IMAGE_EXTENSIONS)


# === read_image ===


def test_reads_rgb_png_exactly(tmp_path):
    pixels = _noise((5, 7, 3))
    Image.fromarray(pixels).save(tmp_path / "x.png")
    result = read_image(tmp_path / "x.png")
    assert result.dtype == np.uint8 and result.shape == (5, 7, 3)
    np.testing.assert_array_equal(result, pixels)


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = _noise((6, 5))
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.stack([gray] * 3, axis=-1))


def test_alpha_is_dropped(tmp_path):
    rgba = _noise((4, 4, 4))
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    gray_alpha = _noise((4, 4, 2), seed=1)
    Image.fromarray(gray_alpha, mode="LA").save(tmp_path / "la.png")
    expected = np.stack([gray_alpha[..., 0]] * 3, axis=-1)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), expected)


def test_palette_image_uses_its_palette_colours(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 255], [10, 20, 30]], np.uint8)
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.flatten().tolist())
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), palette[indices])


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path, mode):
    values = np.array([[0, 257, 1000], [32768, 65279, 65535]], np.uint16)
    byte_order = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (3, 2), values.astype(byte_order).tobytes())
    path = tmp_path / "deep.tif"
    image.save(path)
    # Oracle: v / 257 rounded; 65535 -> 255, 257 -> 1, 1000 -> 3.89 -> 4.
    expected = np.round(values / 257.0).astype(np.uint8)
    result = read_image(path)
    np.testing.assert_array_equal(result, np.stack([expected] * 3, axis=-1))
    assert result.max() == 255 and result[0, 1, 0] == 1


def test_sixteen_bit_png(tmp_path):
    values = np.linspace(0, 65535, 12).astype(np.uint16).reshape(3, 4)
    Image.fromarray(values).save(tmp_path / "deep.png")
    expected = np.round(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[..., 1], expected)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.fromarray(_noise((8, 8, 4)), mode="CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=100)
    with Image.open(tmp_path / "c.jpg") as stored:
        expected = np.asarray(stored.convert("RGB"))
    result = read_image(tmp_path / "c.jpg")
    assert result.shape == (8, 8, 3)
    np.testing.assert_array_equal(result, expected)


def test_truncated_file_raises_dataset_error_naming_path(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(_noise((32, 32, 3))).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError) as caught:
        read_image(path)
    assert str(path) in str(caught.value)
    assert "delete or replace" in str(caught.value)


def test_not_an_image_raises_dataset_error(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is text")
    with pytest.raises(DatasetError, match="fake.jpg"):
        read_image(path)


# === verify_images ===


def test_verify_accepts_good_images(tmp_path):
    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(_noise((4, 4, 3), index)).save(paths[-1])
    verify_images(paths)


def test_verify_names_first_bad_file_and_counts_them(tmp_path):
    paths = []
    for index in range(5):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(_noise((4, 4, 3), index)).save(paths[-1])
    (tmp_path / "1.png").write_text("garbage")
    (tmp_path / "3.png").write_bytes(b"")
    with pytest.raises(DatasetError) as caught:
        verify_images(paths)
    message = str(caught.value)
    assert paths[1] in message and paths[3] not in message
    assert "1 more of 5" in message
    assert "\n" not in message


def test_verify_catches_truncated_jpeg(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_noise((64, 64, 3))).save(path, quality=90)
    verify_images([path])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DatasetError, match="photo.jpg"):
        verify_images([path])


def test_verify_catches_png_with_corrupt_data(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_noise((16, 16, 3))).save(path)
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # inside IDAT: the chunk CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="x.png"):
        verify_images([path])


# === save_image ===


def test_to_uint8_truncates_like_reference():
    values = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0, -0.996], np.float32)
    # Hand-computed: (x+1)/2*255 truncated; 0 -> 127.5 -> 127; 0.5 -> 191.25 -> 191;
    # -0.996 -> 0.51 -> 0; out-of-range values are clipped first.
    np.testing.assert_array_equal(to_uint8(values), [0, 0, 127, 191, 255, 255, 0])


def test_save_image_png_round_trip(tmp_path):
    image = np.random.RandomState(0).uniform(-1.2, 1.2, size=(6, 5, 3)).astype(np.float32)
    path = tmp_path / "out" / "nested" / "img.png"
    save_image(image, path)
    stored = np.asarray(Image.open(path))
    oracle = np.floor((np.clip(image.astype(np.float64), -1, 1) + 1) / 2 * 255).astype(np.uint8)
    # float32 vs float64 arithmetic may differ by one step exactly at integers.
    assert np.abs(stored.astype(int) - oracle).max() <= 1
    np.testing.assert_array_equal(stored, to_uint8(image))
    assert os.listdir(path.parent) == ["img.png"]


def test_save_image_accepts_batch_of_one_and_replaces_atomically(tmp_path):
    path = tmp_path / "img.png"
    save_image(np.ones((1, 4, 4, 3), np.float32), path)
    save_image(-np.ones((4, 4, 3), np.float32), path)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.zeros((4, 4, 3), np.uint8))
    assert os.listdir(tmp_path) == ["img.png"]


def test_save_image_jpeg_by_extension(tmp_path):
    save_image(np.zeros((8, 8, 3), np.float32), tmp_path / "img.jpg")
    with Image.open(tmp_path / "img.jpg") as stored:
        assert stored.format == "JPEG"


def test_save_image_rejects_unknown_extension_and_bad_shape(tmp_path):
    with pytest.raises(ValueError, match="Received"):
        save_image(np.zeros((4, 4, 3)), tmp_path / "img.unknown")
    with pytest.raises(ValueError, match="Received"):
        save_image(np.zeros((4, 4, 5)), tmp_path / "img.png")
    assert os.listdir(tmp_path) == []


def test_save_image_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import errno

    from psr.errors import StorageError

    path = tmp_path / "out.png"
    save_image(np.zeros((4, 4, 3), np.float32), path)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError) as info:
        save_image(np.ones((4, 4, 3), np.float32), path)
    assert str(info.value) == (
        f"{path} cannot be written: no space left on the device; free some space or choose another disk."
    )
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.png"]
