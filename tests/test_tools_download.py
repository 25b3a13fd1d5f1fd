"""tools/download_dataset.py against a loopback HTTP server, file:// URLs and --zip (no internet)."""

import functools
import http.server
import importlib.util
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psr.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "download_dataset.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("download_dataset_tool", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def _png_bytes(value):
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _make_zip(path, name="horse2zebra", splits=("trainA", "trainB", "testA", "testB"), extra=()):
    """Zip laid out like the CycleGAN archives: NAME/trainA/*.jpg, ... ; returns the stored files."""
    files = {}
    with zipfile.ZipFile(path, "w") as bundle:
        for index, split in enumerate(splits):
            for number in range(2):
                member = f"{name}/{split}/n{index}_{number}.png"
                files[member] = _png_bytes(10 * index + number)
                bundle.writestr(member, files[member])
        for member, data in extra:
            bundle.writestr(member, data)
    return files


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields (base_url, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _assert_dataset_matches(target, files, name="horse2zebra"):
    for member, data in files.items():
        assert (target / member[len(name) + 1 :]).read_bytes() == data
    assert sorted(os.listdir(target)) == ["testA", "testB", "trainA", "trainB"]


def test_download_over_http(http_server, tmp_path, capsys):
    base_url, folder = http_server
    files = _make_zip(folder / "horse2zebra.zip")
    root = tmp_path / "datasets"
    target = tool.download("horse2zebra", root=root, base_url=base_url)
    assert target == root / "horse2zebra"
    _assert_dataset_matches(target, files)
    assert os.listdir(root) == ["horse2zebra"]  # temp archive and folders are gone
    assert "MiB" in capsys.readouterr().err  # progress line


def test_download_from_file_url(tmp_path):
    (tmp_path / "mirror").mkdir()
    files = _make_zip(tmp_path / "mirror" / "maps.zip", name="maps")
    target = tool.download("maps", root=tmp_path / "datasets", base_url=(tmp_path / "mirror").as_uri())
    _assert_dataset_matches(target, files, name="maps")


def test_main_with_local_zip(tmp_path):
    files = _make_zip(tmp_path / "h2z.zip", extra=[("__MACOSX/horse2zebra/._x.png", b"junk")])
    root, archive = str(tmp_path / "datasets"), str(tmp_path / "h2z.zip")
    code = tool.main(["horse2zebra", "--root", root, "--zip", archive])
    assert code == 0
    _assert_dataset_matches(tmp_path / "datasets" / "horse2zebra", files)


def test_zip_with_layout_at_archive_root(tmp_path):
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as bundle:
        for split in ("trainA", "trainB", "testA", "testB"):
            bundle.writestr(f"{split}/0.png", _png_bytes(1))
    target = tool.download("mine", root=tmp_path / "datasets", zip_path=tmp_path / "flat.zip")
    assert (target / "testB" / "0.png").read_bytes() == _png_bytes(1)


def test_unknown_name_suggests_closest(tmp_path, capsys):
    code = tool.main(["hors2zebra", "--root", str(tmp_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'horse2zebra'" in error
    assert error.count("\n") == 1


def test_cityscapes_points_to_prepare_script(tmp_path, capsys):
    assert tool.main(["cityscapes", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "tools/prepare_cityscapes.py" in error and "cityscapes-dataset.com" in error
    assert not (tmp_path / "cityscapes").exists()


def test_no_network_tells_user_to_use_zip(tmp_path, capsys):
    # A port nothing listens on: connection refused, like an offline machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = tool.main(["horse2zebra", "--root", str(tmp_path / "d"), "--base-url", f"http://127.0.0.1:{port}"])
    error = capsys.readouterr().err
    assert code == 2
    assert "--zip" in error and "horse2zebra.zip" in error
    assert os.listdir(tmp_path / "d") == []


def test_missing_archive_on_server(http_server, tmp_path):
    base_url, _ = http_server
    with pytest.raises(DatasetError, match="404"):
        tool.download("horse2zebra", root=tmp_path / "d", base_url=base_url)


def test_incomplete_archive_is_rejected_and_nothing_is_left(tmp_path):
    _make_zip(tmp_path / "bad.zip", splits=("trainA", "trainB", "testA"))
    with pytest.raises(DatasetError, match="testB"):
        tool.download("horse2zebra", root=tmp_path / "d", zip_path=tmp_path / "bad.zip")
    assert os.listdir(tmp_path / "d") == []


def test_not_a_zip_is_rejected(tmp_path):
    (tmp_path / "x.zip").write_text("html error page")
    with pytest.raises(DatasetError, match="not a valid zip"):
        tool.download("horse2zebra", root=tmp_path / "d", zip_path=tmp_path / "x.zip")


def test_unsafe_archive_entry_is_refused(tmp_path):
    _make_zip(tmp_path / "evil.zip", extra=[("../../escaped.txt", b"x")])
    with pytest.raises(DatasetError, match="unsafe"):
        tool.download("horse2zebra", root=tmp_path / "d", zip_path=tmp_path / "evil.zip")
    assert not (tmp_path / "escaped.txt").exists()


def test_existing_dataset_is_kept_unless_forced(tmp_path):
    _make_zip(tmp_path / "a.zip")
    root = tmp_path / "d"
    tool.download("horse2zebra", root=root, zip_path=tmp_path / "a.zip")
    marker = root / "horse2zebra" / "trainA" / "keep.png"
    marker.write_bytes(_png_bytes(7))
    # Already complete: no download attempted (the base URL is unreachable).
    tool.download("horse2zebra", root=root, base_url="http://127.0.0.1:9")
    assert marker.exists()
    tool.download("horse2zebra", root=root, zip_path=tmp_path / "a.zip", force=True)
    assert not marker.exists()


def test_script_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "horse2zebr", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: Unknown dataset 'horse2zebr'")
    assert result.stderr.count("\n") == 1


# === Multi-domain datasets (seasons, weather) ===


def _make_seasons_zip(path, letters="ABCD", test_letters=None, top="alps_seasons"):
    """Zip laid out like ComboGAN's alps_seasons: top/train<X>/*.jpg, top/test<X>/*.jpg; returns the files."""
    files = {}
    with zipfile.ZipFile(path, "w") as bundle:
        for prefix, chosen in (("train", letters), ("test", test_letters or letters)):
            for index, letter in enumerate(chosen):
                for number in range(2):
                    member = f"{top}/{prefix}{letter}/{letter}{number}.png"
                    files[member] = _png_bytes(20 * index + number + (100 if prefix == "test" else 0))
                    bundle.writestr(member, files[member])
    return files


def _assert_seasons_layout(target, files, top="alps_seasons"):
    expected = {}
    for member, data in files.items():
        folder, name = member[len(top) + 1 :].split("/")
        prefix = "train" if folder.startswith("train") else "test"
        split = {"train": "train", "test": "val"}[prefix]
        expected[f"{split}/{folder[len(prefix):].strip('_-').lower()}/{name}"] = data
    found = {
        os.path.relpath(os.path.join(directory, name), target): open(os.path.join(directory, name), "rb").read()
        for directory, _, names in os.walk(target)
        for name in names
    }
    assert found == expected


def test_seasons_default_url_is_combogans_and_layout_is_train_val(tmp_path, monkeypatch):
    files = _make_seasons_zip(tmp_path / "local.zip")
    fetched = []

    def fake_fetch(url, destination, hint):  # the network stand-in: copy the local archive
        fetched.append((url, hint))
        destination.write_bytes((tmp_path / "local.zip").read_bytes())

    monkeypatch.setattr(tool, "_fetch", fake_fetch)
    target = tool.download("seasons", root=tmp_path / "datasets")
    assert fetched[0][0] == "https://data.vision.ee.ethz.ch/cvl/combogan/alps_seasons.zip"
    assert "--zip PATH/alps_seasons.zip" in fetched[0][1]
    assert sorted(os.listdir(target)) == ["train", "val"]
    assert sorted(os.listdir(target / "train")) == ["a", "b", "c", "d"]
    _assert_seasons_layout(target, files)
    assert os.listdir(tmp_path / "datasets") == ["seasons"]
    # Complete: a second call downloads nothing.
    tool.download("seasons", root=tmp_path / "datasets")
    assert len(fetched) == 1


def test_seasons_from_file_url_and_from_zip(tmp_path):
    (tmp_path / "mirror").mkdir()
    files = _make_seasons_zip(tmp_path / "mirror" / "alps_seasons.zip", letters=["_spring", "_summer"])
    target = tool.download("seasons", root=tmp_path / "d1", base_url=(tmp_path / "mirror").as_uri())
    assert sorted(os.listdir(target / "val")) == ["spring", "summer"]
    stored = files["alps_seasons/train_spring/_spring0.png"]
    assert (target / "train" / "spring" / "_spring0.png").read_bytes() == stored
    archive = str(tmp_path / "mirror" / "alps_seasons.zip")
    assert tool.main(["seasons", "--root", str(tmp_path / "d2"), "--zip", archive]) == 0
    assert sorted(os.listdir(tmp_path / "d2" / "seasons" / "train")) == ["spring", "summer"]


def test_seasons_archive_with_mismatched_domains_is_rejected(tmp_path):
    _make_seasons_zip(tmp_path / "bad.zip", letters="ABC", test_letters="ABD")
    with pytest.raises(DatasetError, match="different domains"):
        tool.download("seasons", root=tmp_path / "d", zip_path=tmp_path / "bad.zip")
    assert os.listdir(tmp_path / "d") == []
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as bundle:
        bundle.writestr("alps_seasons/readme.txt", b"x")
    with pytest.raises(DatasetError, match="no train"):
        tool.download("seasons", root=tmp_path / "d", zip_path=tmp_path / "empty.zip")


def test_weather_prints_the_manual_layout(tmp_path, capsys):
    assert tool.main(["weather", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "weather/train/<class>/" in error and "weather/val/<class>/" in error and "ieee-dataport" in error
    assert os.listdir(tmp_path) == []
    assert "did you mean 'seasons'" in _unknown_error("season", tmp_path, capsys)


def _unknown_error(name, tmp_path, capsys):
    assert tool.main([name, "--root", str(tmp_path)]) == 2
    return capsys.readouterr().err
