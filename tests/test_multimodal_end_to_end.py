"""stargan2 end to end on tiny generated data: train → resume → export → both signatures → CLI translate → eval.

One module-scoped run (2 iterations of a 16×16 model) serves every test: tracing the four-update step
dominates the cost, so it happens once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from e2e_helpers import TinyExtractor, write_yaml
from PIL import Image

from psr.cli import main
from psr.config import config_from_dict
from psr.experiment import train
from psr.export import latent_codes
from psr.inference import load_run_generator
from psr.rundir import RunDir

pytestmark = pytest.mark.slow
SIZE = 16


def tiny_raw(tmp: Path) -> dict:
    return {
        "name": "tiny_multimodal",
        "method": "stargan2",
        "data": {"root": str(tmp / "scenes"), "crop_size": SIZE, "load_size": SIZE,
                 "synthetic": {"kind": "scenes", "image_size": SIZE, "num_train": 4, "num_test": 2, "seed": 0}},
        "model": {"num_domains": 3, "latent_dim": 3, "style_dim": 4, "mapping_hidden": 8,
                  "generator": {"filters": 4, "max_filters": 8, "num_res_blocks": 1, "num_adain_blocks": 1},
                  "style_encoder": {"filters": 4, "max_filters": 8},
                  "discriminator": {"filters": 4, "max_filters": 8},
                  "head": {"units": 8, "num_patches": 8, "layers": [0, 1]}},
        "loss": {"ds_steps": 4},
        "train": {"epochs": 2, "decay_epochs": 0, "steps_per_epoch": 1, "batch_size": 2, "seed": 1},
        "log": {"run_dir": str(tmp / "run"), "num_samples": 2, "log_every_steps": 1, "checkpoint_every_epochs": 1,
                "verbose": 0},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multimodal")
    raw = tiny_raw(tmp)
    first = dict(raw, train={**raw["train"], "epochs": 1})
    run_dir = train(config_from_dict(first), progress=False)  # 1 iteration, then a resume for the second
    run_dir = train(config_from_dict(raw), progress=False)
    return tmp, Path(run_dir), raw


def test_run_directory_and_resume(trained):
    _, run_dir, _ = trained
    run = RunDir(run_dir)
    assert run.domain_names() == ("night", "plain", "striped")
    state = json.loads((sorted(run.checkpoints_latest.iterdir())[-1] / "state.json").read_text())
    assert state["epoch"] == 2
    network, _, _ = load_run_generator(run_dir)
    assert network.num_domains == 3
    scores = json.loads(run.content_scores.read_text())
    assert {"latent", "reference", "input_unchanged", "diversity_l1"} <= set(scores)
    assert scores["diversity_l1"] >= 0 and np.isfinite(scores["latent"]["psnr"])
    assert run.sample_grid(2).is_file()


def test_export_signatures_match_the_keras_networks(trained):
    _, run_dir, _ = trained
    translator, _, _ = load_run_generator(run_dir)
    loaded = tf.saved_model.load(str(RunDir(run_dir).export))
    rng = np.random.RandomState(0)
    images = rng.uniform(-1, 1, (2, 20, 24, 3)).astype(np.float32)  # any size: padded to 4 inside
    domains = tf.constant([2, 0], tf.int32)
    out = loaded.signatures["translate_latent"](images=images, target_domain=domains, seed=tf.constant(5, tf.int64))
    codes = latent_codes(2, translator.latent_dim, 5)
    padded = tf.pad(images, [[0, 0], [0, 0], [0, 0], [0, 0]])  # 20×24 is already a multiple of 4
    expected = translator.translate_latent(padded, domains, codes)
    # The same float32 graph traced twice: identical kernels, so equal to rounding (1e-5 of O(1) outputs).
    np.testing.assert_allclose(out["images"].numpy(), np.asarray(expected), atol=1e-5)
    serving = loaded.signatures["serving_default"](images=images, target_domain=domains, seed=tf.constant(5, tf.int64))
    np.testing.assert_allclose(serving["images"].numpy(), out["images"].numpy(), atol=0)
    refs = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    out = loaded.signatures["translate_reference"](images=images, reference_images=refs, target_domain=domains)
    np.testing.assert_allclose(out["images"].numpy(), np.asarray(translator.translate_reference(images, refs, domains)),
                               atol=1e-5)
    png = tf.io.encode_png(tf.cast((images[0] + 1) * 127.5, tf.uint8))
    result = loaded.signatures["translate_bytes"](image_bytes=tf.stack([png]), target_domain=tf.constant(["striped"]),
                                                  seed=tf.constant(5, tf.int64))
    decoded = tf.io.decode_png(result["output_bytes"][0]).numpy()
    assert decoded.shape == (20, 24, 3)
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["translate_bytes"](image_bytes=tf.stack([png]), target_domain=tf.constant(["winter"]),
                                             seed=tf.constant(5, tf.int64))


def test_cli_translate_by_domain_name_and_reference(trained, capsys):
    tmp, run_dir, raw = trained
    src = next((Path(raw["data"]["root"]) / "val" / "night").iterdir())
    ref = next((Path(raw["data"]["root"]) / "val" / "striped").iterdir())
    export = RunDir(run_dir).export
    assert main(["translate", str(export), str(src), "-o", str(tmp / "latent"), "--domain", "striped",
                 "--num", "2", "--quiet"]) == 0
    names = sorted(p.name for p in (tmp / "latent").iterdir() if p.suffix == ".png")
    assert names == [f"{src.stem}_striped_0.png", f"{src.stem}_striped_1.png"]
    # The run directory's Keras networks give the export's images (same codes from the same seed).
    assert main(["translate", str(run_dir), str(src), "-o", str(tmp / "latent_run"), "--domain", "2", "--num", "2",
                 "--quiet"]) == 0
    for name in names:
        a = np.asarray(Image.open(tmp / "latent" / name), np.int16)
        b = np.asarray(Image.open(tmp / "latent_run" / name), np.int16)
        assert np.max(np.abs(a - b)) <= 1  # one quantisation step where rounding lands on a boundary
    assert main(["translate", str(export), str(src), "-o", str(tmp / "ref"), "--domain", "striped",
                 "--reference", str(ref), "--quiet"]) == 0
    assert (tmp / "ref" / f"{src.stem}_striped_ref.png").is_file()
    capsys.readouterr()
    assert main(["translate", str(export), str(src), "-o", str(tmp / "bad"), "--domain", "winter"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "winter" in err[0] and "striped" in err[0]
    assert main(["translate", str(export), str(src), "-o", str(tmp / "bad2")]) == 2
    assert "--domain" in capsys.readouterr().err


def test_eval_protocol_records_every_task(trained):
    from psr.evaluation import evaluate_model

    _, run_dir, _ = trained
    record = evaluate_model(run_dir, metrics=["fid"], extractor=TinyExtractor(), progress=False)
    tasks = record["tasks"]["latent"]
    assert len(tasks) == 6 and set(tasks) == {f"{s}2{t}" for s in ("night", "plain", "striped")
                                              for t in ("night", "plain", "striped") if s != t}
    assert record["fid"] == pytest.approx(0.5 * (record["fid_latent"] + record["fid_reference"]))
    assert record["fid_latent"] == pytest.approx(np.mean([t["fid"] for t in tasks.values()]))
    saved = json.loads(RunDir(run_dir).eval_json.read_text())
    assert saved["fid"] == record["fid"]


def test_wrong_domain_count_is_one_line(trained, tmp_path, capsys):
    tmp, _, raw = trained
    raw = dict(raw, model={**raw["model"], "num_domains": 4}, log={**raw["log"], "run_dir": str(tmp_path / "r")})
    spec = write_yaml(tmp_path / "bad.yaml", raw)
    assert main(["run", str(spec), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 domains" in err[0] and "num_domains" in err[0]
