"""GAN compression end to end on generated data: teacher → stage 1 → search → export → translate (spec §1)."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from psr import cli
from psr.config import config_from_dict, load_run_config
from psr.data.unaligned import make_test_dataset
from psr.inference import load_run_generator
from psr.models.profile import mobile_resnet_profile
from psr.rundir import RunDir
from psr.search.evolution import JOURNAL_FILE, RESULT_FILE
from tests.e2e_helpers import TinyExtractor, tiny_raw, write_yaml

BUDGET = 2.2e8  # MACs at 256² of the 3-block student: all-4 0.134G fits, all-6 0.241G and all-8 0.375G do not
CANDIDATES = [8, 6, 4]


def compression_raw(tmp_path, teacher_run, teacher_yaml, **sections):
    raw = {
        "name": "tiny_compress", "method": "compression",
        "data": tiny_raw(tmp_path)["data"],
        "model": {"teacher": {"run": str(teacher_run), "experiment": str(teacher_yaml)},
                  "student": {"filters": 8, "num_blocks": 3, "candidates": CANDIDATES},
                  "discriminator": {"filters": 4, "num_layers": 2}, "head": {"units": 8, "num_patches": 16}},
        "train": {"epochs": 1, "decay_epochs": 1, "batch_size": 1, "learning_rate": 1e-3},
        "eval": {"every_epochs": 1, "metrics": ["fid"]},
        "search": {"budget": BUDGET, "criterion": "teacher_psnr", "population_size": 6, "generations": 2,
                   "after_training": True, "max_images": 4},
        "log": {"run_dir": str(tmp_path / "student"), "num_samples": 2, "checkpoint_every_epochs": 1, "verbose": 0},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from psr.experiment import train

    tmp = tmp_path_factory.mktemp("compress")
    teacher = tiny_raw(tmp, model={"generator": {"filters": 4, "num_blocks": 3},
                                   "discriminator": {"filters": 4, "num_layers": 2},
                                   "head": {"units": 8, "num_patches": 16, "layers": [0, 4, 8, 12]}},
                       train={"epochs": 1, "decay_epochs": 0}, log={"run_dir": str(tmp / "teacher")})
    teacher_yaml = write_yaml(tmp / "teacher.yaml", teacher)
    cfg = config_from_dict(compression_raw(tmp, tmp / "teacher", teacher_yaml))
    run_dir = train(cfg, progress=False, feature_extractor=TinyExtractor())  # trains the teacher first
    return tmp, RunDir(run_dir), cfg


def test_teacher_trained_first_then_student_searched_and_exported(trained):
    tmp, run, cfg = trained
    assert (tmp / "teacher" / "checkpoints" / "latest").is_dir()
    result = json.loads((run.search / RESULT_FILE).read_text())
    journal = [json.loads(line) for line in (run.search / JOURNAL_FILE).read_text().splitlines()]
    assert journal and result["chosen"]
    for entry in journal:  # every evaluated sub-network fits the budget
        config = tuple(int(v) for v in entry["config"].split("_"))
        assert set(config) <= set(CANDIDATES)
        assert mobile_resnet_profile(config, num_blocks=3).macs <= BUDGET
    marker = json.loads((run.export / ".psr_output").read_text())
    assert marker["channel_config"] == result["chosen"]
    log = (run.search / "search.log").read_text().splitlines()
    assert len(log) == 1 + cfg.search.generations  # the first population, then one line per generation


def test_periodic_evaluation_scores_the_widest_and_the_smallest(trained):
    _, run, cfg = trained
    records = [json.loads(line) for line in run.eval_jsonl.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert np.isfinite(record["fid"]) and np.isfinite(record["fid_smallest"])
        assert record["fid"] != record["fid_smallest"]  # two different sub-networks were translated
    assert json.loads(run.best_json.read_text())["metric"] == "fid"


def test_heads_and_adaptors_are_checkpointed(trained):
    from psr.builders import build_compression_trainer
    from psr.methods import TrainerInputs
    from psr.trainers.checkpoints import TrainingState

    _, run, cfg = trained
    restored = []
    for _ in range(2):
        trainer = build_compression_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(16, steps_per_epoch=8))
        fresh = [np.array(v) for v in trainer.head.weights + trainer.adaptors.weights]
        TrainingState(run.checkpoints, trainer, steps_per_epoch=8).restore()
        restored.append([np.array(v) for v in trainer.head.weights + trainer.adaptors.weights])
        assert any(not np.array_equal(a, b) for a, b in zip(fresh, restored[-1]))
    for a, b in zip(*restored):
        np.testing.assert_array_equal(a, b)


def saved_model_output(path, images):
    loaded = tf.saved_model.load(str(path))
    return loaded.signatures["serving_default"](images=tf.constant(images))["images"].numpy()


def test_exported_subnetworks_equal_the_supernet(trained, tmp_path, capsys):
    _, run, cfg = trained
    dataset, _ = make_test_dataset(cfg.data.root + "/testA", image_size=16, batch_size=4)
    images = next(iter(dataset)).numpy()
    supernet, _, _ = load_run_generator(run.path)
    rng = np.random.default_rng(0)
    for index in range(2):
        config = tuple(int(v) for v in rng.choice(CANDIDATES, 8))
        out = tmp_path / f"export{index}"
        assert cli.main(["export", str(run.path), "--config", "_".join(map(str, config)), "-o", str(out)]) == 0
        expected = supernet.translate_and_features(images, config=np.asarray(config, "int32"))[0].numpy()
        # Same float32 ops on the active channels; the masked ones add exact zeros.
        np.testing.assert_allclose(saved_model_output(out, images), expected, atol=1e-5)
    # Default export = the search's answer, and `translate` works on it.
    chosen = json.loads((run.search / RESULT_FILE).read_text())["chosen"]
    expected = supernet.translate_and_features(images, config=np.asarray(chosen.split("_"), "int32"))[0].numpy()
    np.testing.assert_allclose(saved_model_output(run.export, images), expected, atol=1e-5)
    assert cli.main(["translate", str(run.export), cfg.data.root + "/testA", "-o", str(tmp_path / "tr"), "--quiet"]) == 0
    assert len(list((tmp_path / "tr").glob("*.png"))) == 4


def test_search_cli_resumes_without_reevaluating(trained, tmp_path, capsys):
    _, run, _ = trained
    journal = (run.search / JOURNAL_FILE).read_text()
    chosen = json.loads((run.search / RESULT_FILE).read_text())["chosen"]
    assert cli.main(["search", str(run.path), "--quiet"]) == 0
    assert (run.search / JOURNAL_FILE).read_text() == journal  # all cached: nothing evaluated again
    assert chosen in capsys.readouterr().out
    # Other settings on the same folder: one line naming the fix, which then works (on a copy of the run).
    assert cli.main(["search", str(run.path), "--budget", "1.9e8", "--quiet"]) == 2
    assert "--restart" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    assert cli.main(["search", str(copy), "--budget", "1.9e8", "--quiet", "--restart"]) == 0
    chosen = json.loads((copy / "search" / RESULT_FILE).read_text())["chosen"]
    assert mobile_resnet_profile(tuple(int(v) for v in chosen.split("_")), num_blocks=3).macs <= 1.9e8


def test_search_by_fid_with_a_given_extractor(trained, tmp_path):
    from psr.compression import search_run

    _, run, cfg = trained
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.path, copy.path)
    shutil.rmtree(copy.search)
    import dataclasses

    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, criterion="fid"))
    supernet, _, _ = load_run_generator(copy.path)
    result = search_run(copy, cfg, supernet, feature_extractor=TinyExtractor(), progress=False)
    metrics = [ind.metric for ind in result.best]
    assert metrics == sorted(metrics, reverse=True)  # FID: each new best is lower
    assert all(np.isfinite(metrics))


def test_bad_inputs_are_one_line(trained, tmp_path, capsys):
    tmp, run, _ = trained
    assert cli.main(["export", str(run.path), "--config", "8_8_8", "-o", str(tmp_path / "x")]) == 2
    assert "write 8 positive integers" in capsys.readouterr().err
    assert cli.main(["export", str(run.path), "--config", "16_8_8_8_8_8_8_8", "-o", str(tmp_path / "y")]) == 2
    assert "wider than the supernet" in capsys.readouterr().err
    assert cli.main(["search", str(tmp / "teacher"), "--quiet"]) == 2
    assert "compression run" in capsys.readouterr().err
    # A teacher run that does not exist, without an experiment to train it.
    raw = compression_raw(tmp_path, tmp_path / "missing", tmp_path / "none.yaml")
    raw["model"]["teacher"].pop("experiment")
    yaml_path = write_yaml(tmp_path / "c.yaml", raw)
    assert cli.main(["run", str(yaml_path), "--quiet"]) == 2
    assert "holds no latest checkpoint" in capsys.readouterr().err


def test_paired_data_trains_with_a_conditional_discriminator(trained, tmp_path):
    from psr.experiment import train

    tmp, _, _ = trained
    raw = compression_raw(tmp_path, tmp / "teacher", tmp / "teacher.yaml",
                          data={"kind": "aligned", "root": str(tmp_path / "paired"),
                                "synthetic": {"kind": "paired_shapes", "image_size": 16, "num_train": 4,
                                              "num_test": 2}},
                          model={"teacher": {"run": str(tmp / "teacher")},
                                 "student": {"filters": 8, "num_blocks": 3, "candidates": CANDIDATES},
                                 "discriminator": {"filters": 4, "num_layers": 2},
                                 "head": {"units": 8, "num_patches": 16}},
                          loss={"gan_mode": "hinge"}, search={"after_training": False}, eval={"every_epochs": 0},
                          train={"epochs": 1, "decay_epochs": 0})
    run_dir = train(config_from_dict(raw), progress=False)
    cfg = load_run_config(run_dir)
    assert cfg.data.kind == "aligned"
    from psr.builders import build_compression_trainer
    from psr.methods import TrainerInputs

    trainer = build_compression_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(16, 4, paired=True))
    assert trainer.conditional and trainer.recon_target == "ground_truth"
    assert trainer.discriminator.input_channels == 6


def test_fine_tune_starts_from_the_supernet_student_and_discriminator(trained):
    import dataclasses

    from psr.builders import build_compression_trainer
    from psr.methods import TrainerInputs
    from psr.trainers.checkpoints import TrainingState

    _, run, cfg = trained
    chosen = json.loads((run.search / RESULT_FILE).read_text())["chosen"]
    student = dataclasses.replace(cfg.model.student, fixed_config=chosen, init_from=str(run.path))
    fine = build_compression_trainer(dataclasses.replace(cfg.model, student=student), cfg.loss, cfg.train,
                                     TrainerInputs(16, steps_per_epoch=8))
    source = build_compression_trainer(cfg.model, cfg.loss, cfg.train, TrainerInputs(16, steps_per_epoch=8))
    TrainingState(run.checkpoints, source, steps_per_epoch=8).restore()
    for name in ("student", "discriminator"):
        for a, b in zip(getattr(fine, name).weights, getattr(source, name).weights):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert fine.completed_steps == 0 and source.completed_steps > 0
    assert fine.grid_configs() == [tuple(int(v) for v in chosen.split("_"))]
