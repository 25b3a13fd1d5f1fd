"""`main.py` verbs: user mistakes end in one `error:` line and exit status 2, never a traceback."""

from pathlib import Path

import pytest
import yaml

from psr.cli import main

from e2e_helpers import tiny_raw, write_yaml

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_prints_the_resolved_config(capsys):
    code, out, _ = run_cli(["run", str(REPO / "experiments" / "quickstart.yaml"), "--dry-run",
                            "--set", "train.batch_size=2"], capsys)
    assert code == 0
    cfg = yaml.safe_load(out)
    assert cfg["name"] == "quickstart" and cfg["train"]["batch_size"] == 2


def test_unknown_key_is_one_line(tmp_path, capsys):
    experiment = write_yaml(tmp_path / "e.yaml", {"train": {"batch_sise": 2}})
    code, _, err = run_cli(["run", str(experiment)], capsys)
    assert code == 2
    assert err == f"error: {experiment}: Unknown key 'train.batch_sise' in section 'train'. Did you mean 'batch_size'?\n"


def test_missing_dataset_folder_names_the_path(tmp_path, capsys):
    raw = tiny_raw(tmp_path)
    raw["data"].pop("synthetic")
    raw["data"]["root"] = str(tmp_path / "nowhere")
    code, _, err = run_cli(["run", str(write_yaml(tmp_path / "e.yaml", raw))], capsys)
    assert code == 2
    assert err.startswith(f"error: Dataset folder not found: {tmp_path / 'nowhere' / 'trainA'}")
    assert len(err.strip().splitlines()) == 1


def test_empty_dataset_folder_names_the_path(tmp_path, capsys):
    raw = tiny_raw(tmp_path)
    raw["data"].pop("synthetic")
    raw["data"]["root"] = str(tmp_path / "data")
    for name in ("trainA", "trainB"):
        (tmp_path / "data" / name).mkdir(parents=True)
    (tmp_path / "data" / "trainA" / "notes.txt").write_text("x")
    code, _, err = run_cli(["run", str(write_yaml(tmp_path / "e.yaml", raw))], capsys)
    assert code == 2 and str(tmp_path / "data" / "trainA") in err and "none with an image extension" in err


def test_unreadable_image_names_the_file(tmp_path, capsys):
    raw = tiny_raw(tmp_path)
    raw["data"].pop("synthetic")
    raw["data"]["root"] = str(tmp_path / "data")
    from PIL import Image
    import numpy as np

    for name in ("trainA", "trainB"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "data" / "trainB" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, _, err = run_cli(["run", str(write_yaml(tmp_path / "e.yaml", raw))], capsys)
    assert code == 2 and "broken.jpg" in err


def test_head_layers_that_the_generator_lacks(tmp_path, capsys):
    raw = tiny_raw(tmp_path)
    raw["model"]["head"]["layers"] = [0, 4, 99]
    code, _, err = run_cli(["run", str(write_yaml(tmp_path / "e.yaml", raw))], capsys)
    assert code == 2 and err.startswith("error: model.head.layers [0, 4, 99] does not fit this generator")


def test_translate_export_and_eval_need_a_model(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    code, _, err = run_cli(["translate", str(tmp_path / "none"), str(tmp_path / "in"), "-o", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "Model not found" in err
    code, _, err = run_cli(["export", str(tmp_path)], capsys)
    assert code == 2 and "is not a psr run directory" in err
    code, _, err = run_cli(["eval", str(tmp_path)], capsys)
    assert code == 2 and "is not a psr run directory" in err


@pytest.mark.slow
def test_eval_reports_missing_inception_weights(tmp_path, capsys):
    raw = tiny_raw(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 1})
    assert main(["run", str(write_yaml(tmp_path / "e.yaml", raw)), "--quiet"]) == 0
    capsys.readouterr()
    missing = tmp_path / "inception.h5"
    code, _, err = run_cli(["eval", raw["log"]["run_dir"], "--features", "keras-imagenet",
                            "--inception-weights", str(missing)], capsys)
    assert code == 2 and str(missing) in err
    # The paper protocol (the default, auto) without its weights file: one line naming file and URL.
    missing_folder = tmp_path / "no_weights_here"
    missing_folder.mkdir()
    code, _, err = run_cli(["eval", raw["log"]["run_dir"], "--feature-weights", str(missing_folder)], capsys)
    assert code == 2 and "pt_inception-2015-12-05-6726825d.pth" in err and len(err.strip().splitlines()) == 1


def test_image_that_breaks_during_training_is_one_line(tmp_path, capsys, monkeypatch):
    import psr.data.unaligned as unaligned
    from psr.errors import DatasetError

    def broken(path):
        raise DatasetError(f"Cannot read image {path}: truncated file. Delete or replace the file.")

    raw = tiny_raw(tmp_path, train={"epochs": 1, "decay_epochs": 0, "steps_per_epoch": 1})
    experiment = write_yaml(tmp_path / "e.yaml", raw)
    # Start-up checks pass; the file "breaks" when tf.data decodes it.
    monkeypatch.setattr(unaligned, "read_image", broken)
    code, _, err = run_cli(["run", str(experiment), "--quiet"], capsys)
    assert code == 2
    assert err.startswith("error: Cannot read image ") and err.rstrip().endswith("Delete or replace the file.")
    assert len(err.strip().splitlines()) == 1
