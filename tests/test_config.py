"""Config loading: every user mistake becomes one ConfigError naming the key, the value and the fix."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from psr.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_experiment,
    load_run_config,
    parse_override,
)
from psr.errors import ConfigError

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def _error(raw, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, overrides)
    return str(info.value)


def test_defaults_are_the_official_horse2zebra_settings():
    cfg = config_from_dict({})
    assert cfg.loss.lambda_contrastive == 0.1 and cfg.loss.lambda_src == 0.05
    assert cfg.loss.temperature == 0.07 and cfg.loss.gan_mode == "lsgan"
    assert cfg.model.head.layers == (0, 4, 8, 12, 16) and cfg.model.head.num_patches == 256
    assert (cfg.train.learning_rate, cfg.train.beta_1, cfg.train.beta_2) == (2e-4, 0.5, 0.999)
    assert cfg.train.total_epochs == 400
    assert (cfg.loss.curriculum.start, cfg.loss.curriculum.end) == (50.0, 10.0)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_shipped_experiment_loads(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.name == path.stem


def test_cityscapes_preset_matches_the_spec():
    cfg = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "cityscapes.yaml")
    assert cfg.data.direction == "BtoA"
    assert cfg.loss.lambda_src == 0.1
    assert cfg.loss.curriculum.step_epoch == 200 and cfg.loss.curriculum.step_value == 1.0


def test_unknown_top_level_key_suggests_the_closest_name():
    assert _error({"trian": {}}) == "Unknown key 'trian' in the top level. Did you mean 'train'?"


def test_unknown_nested_key_names_its_section():
    message = _error({"model": {"generator": {"filtres": 8}}})
    assert message == "Unknown key 'model.generator.filtres' in section 'model.generator'. Did you mean 'filters'?"


def test_unknown_key_without_a_close_match_lists_valid_keys():
    message = _error({"train": {"zzzz": 1}})
    assert message.startswith("Unknown key 'train.zzzz' in section 'train'. Valid keys: epochs, decay_epochs")


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"train": {"batch_size": "four"}}, "train.batch_size: expected an integer, got 'four'."),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be >= 1, got 0."),
        ({"train": {"batch_size": 2.5}}, "train.batch_size: expected an integer, got 2.5."),
        ({"train": {"jit_compile": "yes"}}, "train.jit_compile: expected true or false, got 'yes'."),
        ({"loss": {"temperature": 0}}, "loss.temperature: must be > 0.0, got 0.0."),
        ({"loss": {"gan_mode": "lsgna"}}, "loss.gan_mode: 'lsgna' is not one of lsgan, nonsaturating, hinge. Did you mean 'lsgan'?"),
        ({"train": {"beta_1": 1.0}}, "train.beta_1: must be < 1.0, got 1.0."),
        ({"data": {"root": None}}, "data.root: null is not allowed; expected str."),
        ({"model": {"generator": 3}}, "model.generator: expected a mapping of GeneratorConfig fields, got 3."),
        ({"model": {"head": {"layers": 4}}}, "model.head.layers: expected a list, got 4."),
    ],
)
def test_wrong_types_and_ranges_name_key_and_value(raw, expected):
    assert _error(raw) == expected


def test_cross_field_checks():
    assert "load_size (200) is smaller than data.crop_size (256)" in _error({"data": {"load_size": 200}})
    assert "must be increasing and unique" in _error({"model": {"head": {"layers": [4, 0]}}})
    assert "batch_size must be 1" in _error({"data": {"preprocess": "none"}, "train": {"batch_size": 2}})


def test_scientific_notation_without_dot_is_a_number():
    # YAML 1.1 reads "2e-4" as a string; users write it anyway.
    assert config_from_dict({"train": {"learning_rate": "2e-4"}}).train.learning_rate == pytest.approx(2e-4)


def test_overrides_parse_yaml_values_and_create_sections():
    cfg = config_from_dict({}, ["train.batch_size=4", "loss.curriculum.step_epoch=200", "model.head.layers=[0, 4]"])
    assert cfg.train.batch_size == 4
    assert cfg.loss.curriculum.step_epoch == 200
    assert cfg.model.head.layers == (0, 4)
    assert parse_override("log.run_dir=runs/a=b") == (["log", "run_dir"], "runs/a=b")


def test_bad_overrides():
    assert "expected KEY=VALUE" in _error({}, ["train.batch_size"])
    assert _error({}, ["train.batch_sise=2"]).startswith("Unknown key 'train.batch_sise'")
    assert "'batch_size' is a value, not a section" in _error({"train": {"batch_size": 1}}, ["train.batch_size.x=2"])
    assert _error({}, ["train.batch_size.x=2"]) == "train.batch_size: expected an integer, got {'x': 2}."


def test_yaml_syntax_error_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML \(line \d+, column \d+\)"):
        load_experiment(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="Experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping of sections, got list"):
        load_experiment(path)


def test_error_from_a_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("train: {batch_size: -1}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: train.batch_size: must be >= 1, got -1."):
        load_experiment(path)


def test_dump_round_trips_through_a_run_directory(tmp_path):
    cfg = config_from_dict({"name": "x", "train": {"batch_size": 3}, "data": {"synthetic": {"image_size": 16}}})
    (tmp_path / "config.yaml").write_text(dump_config(cfg, {"steps_per_epoch": 7}))
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["resolved"] == {"steps_per_epoch": 7}
    assert load_run_config(tmp_path) == cfg
    assert config_to_dict(cfg)["model"]["head"]["layers"] == [0, 4, 8, 12, 16]


def test_load_run_config_on_a_folder_without_config(tmp_path):
    with pytest.raises(ConfigError, match="is not a psr run directory"):
        load_run_config(tmp_path)


# === Load-time checks (issue #11 item 7) ===


def _built_networks_accept(raw: dict) -> bool:
    """Oracle: do the real networks (and the unaligned data pipeline) accept this crop size?"""
    from psr.builders import build_discriminator, build_generator
    from psr.config import DataConfig, DiscriminatorConfig, GeneratorConfig

    data = DataConfig(**{k: v for k, v in raw["data"].items() if k in ("kind", "crop_size", "load_size")})
    g = GeneratorConfig(**raw["model"]["generator"])
    d = DiscriminatorConfig(**raw["model"].get("discriminator", {}))
    try:
        generator = build_generator(g, crop_size=data.crop_size)
        build_discriminator(d, crop_size=data.crop_size)
        out = generator(np.zeros((1, data.crop_size, data.crop_size, 3), np.float32))
    except ValueError:
        return False
    if out.shape[1] != data.crop_size:  # a crop the generator cannot give back at its own size
        return False
    return data.kind != "unaligned" or data.crop_size % 4 == 0  # UnalignedDataset's own rule


RESNET = {"generator": {"filters": 2, "num_blocks": 1}, "discriminator": {"filters": 2, "num_layers": 1}}
STYLEGAN = {"generator": {"architecture": "stylegan2", "filters": 2, "num_blocks": 1, "num_downsampling": 2},
            "discriminator": {"architecture": "stylegan2", "filters": 2}}


@pytest.mark.parametrize("crop", [16, 30, 32, 34, 18, 24])
@pytest.mark.parametrize("model,kind", [(RESNET, "unaligned"), (STYLEGAN, "single_image")])
def test_crop_size_is_checked_at_load_like_the_networks_would(crop, model, kind):
    raw = {"data": {"kind": kind, "crop_size": crop, "load_size": 64}, "model": model}
    accepted = _built_networks_accept(raw)
    if accepted:
        config_from_dict(raw)
    else:
        message = _error(raw)
        assert message.startswith(f"data.crop_size {crop} ") and message.count("\n") == 0


def test_crop_size_message_names_the_constraint_and_two_fixes():
    assert _error({"data": {"crop_size": 30, "load_size": 64}}) == (
        "data.crop_size 30 is not a multiple of 4 (the ResNet generator halves it twice); use 28 or 32."
    )
    raw = {"data": {"kind": "single_image", "crop_size": 48, "load_size": 64}, "model": STYLEGAN}
    assert _error(raw) == (
        "data.crop_size 48 must be a power of two from 4 to 1024 for the StyleGAN2 discriminator; use 64."
    )


def test_dry_run_fails_on_a_bad_crop_size(tmp_path, capsys):
    from psr.cli import main

    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump({"data": {"crop_size": 30, "load_size": 64}}))
    assert main(["run", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err == (
        f"error: {path}: data.crop_size 30 is not a multiple of 4 (the ResNet generator halves it twice); "
        "use 28 or 32.\n"
    )


def test_eval_metrics_are_checked_against_the_registry_at_load():
    assert _error({"eval": {"metrics": ["fid", "kdi"], "best_metric": "fid"}}) == (
        "eval.metrics: unknown metric 'kdi'; valid metrics: fcn, fid, kid, lpips, miou. Did you mean 'kid'?"
    )
    assert config_from_dict({"eval": {"metrics": ["fid", "kid"]}}).eval.metrics == ("fid", "kid")


def test_metrics_registered_by_a_library_user_are_accepted():
    from psr.metrics import registry

    saved = dict(registry._METRICS)
    try:
        registry.register_metric("precision")(lambda generated, reference: 0.0)
        cfg = config_from_dict({"eval": {"metrics": ["fid", "precision"]}})
        assert cfg.eval.metrics == ("fid", "precision")
    finally:
        registry._METRICS.clear()
        registry._METRICS.update(saved)


def test_loading_a_config_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from psr.config import load_experiment; "
            f"load_experiment({str(EXPERIMENTS[0])!r}); print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.strip() == "False", done.stderr


def test_a_config_that_is_not_utf8_text_is_one_line(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_bytes(b"name: caf\xe9\n")  # Latin-1
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(info.value) == (
        f"{path} is not UTF-8 text (byte 9 is 0xe9); pass the experiment YAML file or save it as UTF-8."
    )
    png = tmp_path / "photo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ConfigError, match=r"photo.yaml is not UTF-8 text \(byte 0 is 0x89\)"):
        load_experiment(png)


def test_a_folder_passed_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_experiment(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is a folder, not an experiment file; pass a YAML file such as experiments/quickstart.yaml."
    )


def test_minimum_image_side_matches_the_networks():
    """Oracle: the real generators on every side 1..20 (after the reflect pad to a multiple of 4)."""
    import tensorflow as tf

    from psr.builders import build_generator
    from psr.config import GeneratorConfig, minimum_image_side
    from psr.export import translate_any_size

    for cfg in (GeneratorConfig(filters=2, num_blocks=1), GeneratorConfig(filters=2, num_blocks=0),
                GeneratorConfig(architecture="stylegan2", filters=2, num_blocks=1, num_downsampling=2)):
        generator = build_generator(cfg, crop_size=32)
        run = tf.function(lambda x: translate_any_size(lambda y: generator(y, training=False), x, 4),
                          reduce_retracing=True)
        works = []
        for side in range(1, 13):
            try:
                run(tf.zeros([1, side, 13, 3]))
                works.append(side)
            except tf.errors.InvalidArgumentError:
                pass
        expected = minimum_image_side(cfg, 4)
        assert works == list(range(expected, 13)), (cfg, works)


def test_xla_under_tf_distribute_is_refused_at_load():
    from psr.config import config_from_dict
    from psr.errors import ConfigError

    with pytest.raises(ConfigError, match="train.jit_compile does not work under tf.distribute"):
        config_from_dict({"train": {"jit_compile": True, "distribute": "mirrored"}})
    assert config_from_dict({"train": {"distribute": "mirrored"}}).train.distribute == "mirrored"


def test_runs_stored_before_fused_auto_still_resume(tmp_path):
    """A run written when `fused` defaulted to true resumes under `auto` (same weights, same values), and
    search settings may change; a changed architecture is still refused."""
    from psr.config import dump_config, resume_notices

    stored = config_from_dict({"model": {"generator": {"fused": True}, "discriminator": {"fused": True}}})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(stored))
    notices = resume_notices(path, config_from_dict({"search": {"budget": 3e9}}))
    assert notices == ["model.discriminator.fused True → 'auto'", "model.generator.fused True → 'auto'"]
    with pytest.raises(ConfigError, match="changed: model.generator.filters"):
        resume_notices(path, config_from_dict({"model": {"generator": {"filters": 32}}}))
