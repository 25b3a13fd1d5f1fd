"""`method: compression` configuration: presets, defaults and one-line errors (no TensorFlow needed)."""

import pytest

from psr.config import config_from_dict, load_experiment
from psr.errors import ConfigError


def raw(**model):
    return {"method": "compression", "data": {"crop_size": 32, "load_size": 32},
            "model": {"teacher": {"run": "t"}, "student": {"filters": 16, "candidates": [16, 8]},
                      "head": {"num_patches": 64}, **model}}


def test_method_defaults_are_the_released_h2z_settings():
    cfg = load_experiment("experiments/compress_horse2zebra.yaml")
    assert (cfg.train.epochs, cfg.train.decay_epochs, cfg.train.batch_size, cfg.train.seed) == (200, 200, 1, 233)
    assert (cfg.loss.lambda_recon, cfg.loss.lambda_distill, cfg.loss.lambda_src, cfg.loss.lambda_contrastive) == (
        10.0, 0.01, 10.0, 0.1)
    assert cfg.loss.layer_reduction == "sum" and cfg.search.budget == 3e9
    city = load_experiment("experiments/compress_cityscapes.yaml")
    assert (city.loss.lambda_recon, city.loss.lambda_distill, city.loss.gan_mode) == (100.0, 1.0, "hinge")
    assert city.search.criterion == "miou" and city.data.kind == "aligned" and city.data.direction == "BtoA"
    fine = load_experiment("experiments/compress_map2sat_finetune.yaml")
    assert fine.model.student.fixed_config == "16_16_48_32_32_40_24_16"


@pytest.mark.parametrize("model, words", [
    ({"student": {"filters": 16, "num_blocks": 4}}, "multiple of 3"),
    ({"student": {"filters": 16, "candidates": [32]}}, "model.student.candidates"),
    ({"student": {"filters": 16, "fixed_config": "16_16"}}, "8 widths"),
    ({"student": {"filters": 16, "fixed_config": 1616}}, "Quote it"),
    ({"head": {"num_patches": 65}}, "exceeds the 64 locations"),
    ({"teacher": {"run": "t", "layers": [1, 2]}}, "4 teacher list indices"),
])
def test_bad_sections_are_one_line(model, words):
    with pytest.raises(ConfigError, match=words):
        config_from_dict(raw(**model))


def test_search_needs_labels_for_miou_and_a_budget_after_training():
    with pytest.raises(ConfigError, match="search.labels"):
        config_from_dict({**raw(), "search": {"criterion": "miou"}})
    with pytest.raises(ConfigError, match="search.budget"):
        config_from_dict({**raw(), "search": {"after_training": True}})
