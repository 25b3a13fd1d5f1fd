"""`main.py eval --metrics lpips,fcn,miou`: names and requirements checked before translating, and the
recorded scores equal the library functions applied to the same translations."""

import collections
import json

import numpy as np
import pytest
from PIL import Image

from psr.cli import main


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_metric_is_refused_before_the_model_is_read(tmp_path, capsys):
    # tmp_path is no run directory: the name check must come first.
    code, _, err = run_cli(["eval", str(tmp_path), "--metrics", "fid,lpis"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert err == "error: --metrics: unknown metric 'lpis'; valid metrics: fcn, fid, kid, lpips, miou. Did you mean 'lpips'?\n"


def _torch_state_from_keras(torch, variables_by_key):
    return collections.OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in variables_by_key.items())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch = pytest.importorskip("torch")
    import keras

    from psr.export import export_generator
    from psr.metrics.segmentation import TRAIN_ID_COLORS
    from psr.models.drn import _expected_tensors, build_drn_seg
    from psr.models.resnet_generator import ResnetGenerator

    root = tmp_path_factory.mktemp("paired")
    keras.utils.set_random_seed(0)
    generator = ResnetGenerator(filters=4, num_blocks=1)
    generator(np.zeros((1, 32, 32, 3), np.float32))
    export = export_generator(generator, root / "export")
    rng = np.random.default_rng(0)
    for split in ("testA", "testB"):
        (root / "data" / split).mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "data" / "testA" / f"{i}_A.png")
        colors = TRAIN_ID_COLORS[rng.integers(0, 19, (16, 32))].astype(np.uint8)
        Image.fromarray(colors).save(root / "labels" / f"{i}_A.png")
    # DRN-D-22 random weights written in the DRNSeg layout (the loader transposes them back).
    drn = build_drn_seg("drn_d_22")
    state = {}
    for key, (shape, variable, axes) in _expected_tensors(drn, "drn_d_22", 19).items():
        value = np.asarray(variable.numpy())
        if key == "seg.weight":
            value = value * 50  # spread the class scores
        if axes is not None:  # Keras layout -> torch layout (up.weight is stored without its group axis)
            value = np.transpose(value if value.ndim == 4 else value[..., None], np.argsort(axes))
        state[key] = value.reshape(shape)
    torch.save(_torch_state_from_keras(torch, state), root / "drn_d_22_cityscapes.pth")
    # LPIPS random weights in the torchvision / lpips layouts.
    from psr.metrics.lpips import TAP_CHANNELS, _ALEXNET_CONVS

    alexnet, lins = {}, {}
    in_channels = 3
    for (index, filters, kernel, _, _), channels in zip(_ALEXNET_CONVS, TAP_CHANNELS):
        bound = 1 / np.sqrt(in_channels * kernel * kernel)
        alexnet[f"features.{index}.weight"] = rng.uniform(-bound, bound, (filters, in_channels, kernel, kernel))
        alexnet[f"features.{index}.bias"] = rng.uniform(-bound, bound, (filters,))
        lins[f"lin{len(lins)}.model.1.weight"] = rng.uniform(0, 0.1, (1, channels, 1, 1))
        in_channels = filters
    to32 = {k: v.astype(np.float32) for k, v in alexnet.items()}
    torch.save(_torch_state_from_keras(torch, to32), root / "alexnet.pth")
    torch.save(_torch_state_from_keras(torch, {k: v.astype(np.float32) for k, v in lins.items()}), root / "alex.pth")
    return root, export


def test_eval_paired_metrics_match_library(setup, capsys):
    from psr.metrics.lpips import build_lpips, folder_lpips
    from psr.metrics.paired import pair_by_name
    from psr.metrics.segmentation import build_segmenter, segmentation_hist, segmentation_scores

    root, export = setup
    argv = ["eval", str(export), "--data", str(root / "data"), "--direction", "AtoB", "--image-size", "32",
            "--metrics", "lpips,fcn,miou", "--lpips-alexnet-weights", str(root / "alexnet.pth"),
            "--lpips-weights", str(root / "alex.pth"), "--segmentation-weights", str(root / "drn_d_22_cityscapes.pth"),
            "--segmentation-labels", str(root / "labels")]
    (root / "data" / "testB").rmdir()  # paired metrics need no target folder
    (root / "data" / "testB").mkdir()
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    record = json.loads(out)
    translations = root / "export_eval" / "eval" / "latest" / "translations"
    lpips = folder_lpips(build_lpips(str(root / "alexnet.pth"), str(root / "alex.pth")),
                         pair_by_name(str(translations), str(root / "data" / "testA"), "input image"))
    hist = segmentation_hist(pair_by_name(str(translations), str(root / "labels"), "label map"),
                             build_segmenter("drn_d_22", str(root / "drn_d_22_cityscapes.pth")), "color")
    scores = segmentation_scores(hist)
    # Bicubic resizing of the colour maps blends some edge pixels towards black (ignored).
    assert 0.9 * 2 * 128 * 256 < hist.sum() <= 2 * 128 * 256
    assert record["lpips"] == pytest.approx(lpips, abs=1e-9) and record["lpips"] > 0
    assert record["fcn_miou"] == pytest.approx(scores["miou"]) == pytest.approx(record["miou"])
    assert record["fcn_pixel_acc"] == pytest.approx(scores["pixel_acc"])
    assert record["fcn_class_acc"] == pytest.approx(scores["class_acc"])


def test_fcn_without_labels_fails_before_translating(setup, capsys):
    root, export = setup
    out_dir = root / "export_eval" / "eval" / "best"
    code, _, err = run_cli(["eval", str(export), "--data", str(root / "data"), "--metrics", "fcn",
                            "--checkpoint", "best"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "need Cityscapes ground-truth labels, which this run does not have" in err
    assert not out_dir.exists()
    code, _, err = run_cli(["eval", str(export), "--data", str(root / "data"), "--metrics", "lpips",
                            "--checkpoint", "best"], capsys)
    assert code == 2 and "alexnet-owt-7be5be79.pth (not given)" in err and not out_dir.exists()


def test_periodic_evaluation_checks_paired_requirements_at_train_begin(tmp_path):
    import dataclasses

    from psr.config import EvalConfig, ExperimentConfig
    from psr.errors import ConfigError
    from psr.callbacks import PeriodicEvaluation
    from psr.metrics.paired import higher_is_better, result_key

    cfg = ExperimentConfig(eval=dataclasses.replace(EvalConfig(), every_epochs=1, metrics=("fid", "miou"),
                                                    best_metric="miou"))
    # FID's extractor is not under test here.
    callback = PeriodicEvaluation(cfg.eval, cfg.data, cfg.export.pad_multiple, "single_modal", tmp_path,
                                  extractor=object())
    with pytest.raises(ConfigError, match="fcn/miou need Cityscapes ground-truth labels"):
        callback.on_train_begin()
    assert higher_is_better("miou") and higher_is_better("fcn") and not higher_is_better("fid")
    assert not higher_is_better("lpips")
    assert result_key("fcn") == "fcn_miou" and result_key("kid") == "kid"
