"""LPIPS: parity with a PyTorch re-statement (random weights in the official .pth layouts), LPIPS(x, x) = 0,
symmetry, the StarGAN v2 diversity protocol and weight-file errors."""

import collections
import itertools

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.metrics.lpips import LPIPS, build_lpips, lpips_distances, lpips_diversity

torch = None


def _torch_lpips_parts(seed=0):
    """torchvision-layout AlexNet `features` and five LPIPS lin convs with random weights."""
    global torch
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(seed)
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )
    # Non-negative lin weights, as LPIPS v0.1 (it clamps them while training).
    lins = [nn.Conv2d(c, 1, 1, bias=False) for c in (64, 192, 384, 256, 256)]
    for lin in lins:
        lin.weight.data.uniform_(0.0, 0.1)
    return features, lins


def _torch_lpips(features, lins, x, y):
    """StarGAN v2's metrics/lpips.py forward, per image (NCHW tensors in [-1, 1])."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(z):
        z = (z - shift) / scale
        out = []
        for layer in features:
            z = layer(z)
            if isinstance(layer, torch.nn.ReLU):
                out.append(z * torch.rsqrt(torch.sum(z ** 2, dim=1, keepdim=True) + 1e-10))
        return out

    total = 0
    for lin, a, b in zip(lins, taps(x), taps(y)):
        total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
    return total


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    features, lins = _torch_lpips_parts()
    folder = tmp_path_factory.mktemp("lpips")
    alexnet_state = collections.OrderedDict(
        (f"features.{k}", v) for k, v in features.state_dict().items()
    )
    # The classifier of the torchvision file must be ignored.
    alexnet_state["classifier.1.weight"] = torch.zeros(8, 9216)
    lin_state = collections.OrderedDict((f"lin{i}.model.1.weight", lin.weight.data) for i, lin in enumerate(lins))
    alexnet_path, lin_path = folder / "alexnet-owt-test.pth", folder / "alex.pth"
    # The public files are in the legacy format; test it and the zip format.
    torch.save(alexnet_state, alexnet_path, _use_new_zipfile_serialization=False)
    torch.save(lin_state, lin_path)
    model = build_lpips(str(alexnet_path), str(lin_path))
    return features, lins, model, folder


def _images(seed, n=3, size=64):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_matches_pytorch_restatement(weights):
    features, lins, model, _ = weights
    x, y = _images(1), _images(2)
    with torch.no_grad():
        expected = _torch_lpips(
            features, lins, torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y).permute(0, 3, 1, 2)
        ).double().numpy()
    actual = lpips_distances(model, x, y)
    # float32: each tap goes through ≤ 5 convs of ≤ 3456-term sums, relative error per conv
    # ≲ eps·sqrt(n) ≈ 1.2e-7·59 ≈ 7e-6 in the worst case, and the spatial means of the
    # final ~0.1-sized values shrink it further: 1e-5 absolute bounds it with margin.
    assert np.all(expected > 1e-3)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)


def test_distance_to_itself_is_zero_and_symmetric(weights):
    *_, model, _ = weights
    x, y = _images(3), _images(4)
    np.testing.assert_array_equal(lpips_distances(model, x, x), np.zeros(3))
    np.testing.assert_allclose(lpips_distances(model, x, y), lpips_distances(model, y, x), rtol=0, atol=1e-7)


def test_stargan_v2_checkpoint_key_layout_is_accepted(weights, tmp_path):
    features, lins, model, folder = weights
    state = collections.OrderedDict(
        (f"lpips_weights.{i}.main.1.weight", lin.weight.data) for i, lin in enumerate(lins)
    )
    torch.save(state, tmp_path / "lpips_weights.ckpt", _use_new_zipfile_serialization=False)
    other = build_lpips(str(folder / "alexnet-owt-test.pth"), str(tmp_path / "lpips_weights.ckpt"))
    x, y = _images(5, n=2), _images(6, n=2)
    np.testing.assert_array_equal(lpips_distances(other, x, y), lpips_distances(model, x, y))


def test_diversity_is_mean_over_unordered_pairs(weights):
    *_, model, _ = weights
    outputs = [_images(10 + k, n=2, size=32) for k in range(4)]
    expected = np.mean([
        np.mean(lpips_distances(model, outputs[i], outputs[j])) for i, j in itertools.combinations(range(4), 2)
    ])
    assert len(list(itertools.combinations(range(4), 2))) == 6
    assert lpips_diversity(model, outputs) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        lpips_diversity(model, outputs[:1])


def test_missing_and_wrong_weight_files_raise_one_line_errors(weights, tmp_path):
    _, _, _, folder = weights
    with pytest.raises(CheckpointError, match="alexnet-owt-7be5be79.pth") as error:
        build_lpips(str(tmp_path / "nope.pth"), str(folder / "alex.pth"))
    assert "\n" not in str(error.value)
    # The lin file passed as the backbone: no features.* keys.
    with pytest.raises(CheckpointError, match="features.0.weight is missing"):
        build_lpips(str(folder / "alex.pth"), str(folder / "alex.pth"))


def test_config_roundtrip():
    model = LPIPS(eps=1e-8)
    assert LPIPS.from_config(model.get_config()).eps == 1e-8


def test_paired_metric_pairs_cityscapes_twins_and_resizes_references(weights, tmp_path):
    from PIL import Image

    from psr.metrics.paired import PairedInputs, compute_paired_metrics

    *_, model, _ = weights
    rng = np.random.default_rng(7)
    generated, targets = tmp_path / "fake", tmp_path / "testA"
    generated.mkdir(), targets.mkdir()
    fakes, refs = [], []
    for i in range(2):
        fake = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        target = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(fake).save(generated / f"{i}_B.png")
        Image.fromarray(target).save(targets / f"{i}_A.png")
        fakes.append(fake)
        refs.append(np.asarray(Image.fromarray(target).resize((32, 32), Image.BICUBIC)))
    expected = np.mean(lpips_distances(model, np.stack(fakes) / 127.5 - 1, np.stack(refs) / 127.5 - 1))
    result = compute_paired_metrics(
        ["lpips"], PairedInputs(str(generated), target_dir=str(targets)), lpips_against="target", lpips_model=model
    )
    assert result["lpips"] == pytest.approx(expected, abs=1e-7)
