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
