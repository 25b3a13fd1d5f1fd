"""Parity of the paper FID extractors with PyTorch re-statements of their networks.

The oracle below is written from the architecture facts of torchvision's
Inception3 and pytorch-fid's FIDInception blocks (avg-pool without padding in
A/C/E_1, max-pool in E_2), with random weights saved as real `.pth` state dicts
under the official key names (fc and AuxLogits included, as in the downloads).

Tolerance. Each conv sums n ≤ 3·3·448 ≈ 4·10³ float32 products; with rounding
errors that behave like a random walk its relative error is ~eps·sqrt(n) ≈
1.2e-7·64 ≈ 8e-6 of the sum's magnitude. The longest path has ~48 conv layers;
independent per-layer errors add as sqrt(48)·8e-6 ≈ 5e-5 of the activation
scale. The random weights keep activations O(1) (He-scaled convs, batch norm
of unit scale), so the features agree within 1e-4 × max(1, max |feature|), 2×
above that estimate (measured: ~7e-6 at a feature scale of 12, with oneDNN on and
off) and far below the difference between the two pooling variants (checked below).
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from psr.errors import CheckpointError  # noqa: E402
from psr.metrics.extractors import (  # noqa: E402
    PytorchFidFeatures,
    TorchvisionInceptionFeatures,
    find_weights_file,
    make_feature_extractor,
)
from psr.metrics.registry import evaluate_folders  # noqa: E402

FEATURE_TOLERANCE = 1e-4

# === PyTorch re-statement (the oracle) ===


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg_counting_padding(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1)


def avg_ignoring_padding(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def max_padded(x):
    return F.max_pool2d(x, 3, stride=1, padding=1)


class BlockA(nn.Module):
    def __init__(self, cin, pool_features, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(self.pool(x)),
        ], 1)


class BlockB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):
    def __init__(self, cin, c7, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        dbl = x
        for index in range(1, 6):
            dbl = getattr(self, f"branch7x7dbl_{index}")(dbl)
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            dbl,
            self.branch_pool(self.pool(x)),
        ], 1)


class BlockD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        seven = x
        for index in range(1, 5):
            seven = getattr(self, f"branch7x7x3_{index}")(seven)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3),
            self.branch_pool(self.pool(x)),
        ], 1)


class AuxLogits(nn.Module):
    """Only so the state dict has torchvision's AuxLogits.* keys (features never use it)."""

    def __init__(self):
        super().__init__()
        self.conv0 = BasicConv2d(768, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.fc = nn.Linear(768, 1000)


class TorchInception(nn.Module):
    def __init__(self, fid: bool):
        super().__init__()
        avg = avg_ignoring_padding if fid else avg_counting_padding
        last = max_padded if fid else avg_counting_padding
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = BlockA(192, 32, avg)
        self.Mixed_5c = BlockA(256, 64, avg)
        self.Mixed_5d = BlockA(288, 64, avg)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128, avg)
        self.Mixed_6c = BlockC(768, 160, avg)
        self.Mixed_6d = BlockC(768, 160, avg)
        self.Mixed_6e = BlockC(768, 192, avg)
        if not fid:
            self.AuxLogits = AuxLogits()
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, avg)
        self.Mixed_7c = BlockE(2048, last)
        self.fc = nn.Linear(2048, 1008 if fid else 1000)

    def forward(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def random_inception(fid: bool, seed: int) -> TorchInception:
    """Random weights that keep activations O(1): He-scaled convs, unit-scale batch norms."""
    generator = torch.Generator().manual_seed(seed)
    model = TorchInception(fid).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                count = module.num_features
                module.weight.copy_(0.8 + 0.4 * torch.rand(count, generator=generator))
                module.bias.copy_(0.1 * torch.randn(count, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(count, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(count, generator=generator))
    return model


def pytorch_fid_input(images: np.ndarray) -> "torch.Tensor":
    """pytorch-fid: ToTensor, bilinear resize to 299 (align_corners=False), 2x − 1."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


def stargan_v2_input(images: np.ndarray) -> "torch.Tensor":
    """StarGAN v2: PIL Resize([256, 256]), Resize([299, 299]) (bilinear), ToTensor, ImageNet Normalize."""
    from PIL import Image

    resized = np.stack([
        np.asarray(Image.fromarray(image).resize((256, 256), Image.BILINEAR).resize((299, 299), Image.BILINEAR))
        if image.shape[:2] != (256, 256) else
        np.asarray(Image.fromarray(image).resize((299, 299), Image.BILINEAR))
        for image in images
    ])
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def torch_features(model, tensor) -> np.ndarray:
    with torch.no_grad():
        return model(tensor).numpy()


def frechet_oracle(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance of the sample Gaussians (np.mean, N − 1 covariance), exact for N < d.

    With centred rows scaled by 1/sqrt(N − 1), A_i, sigma_i = A_iᵀA_i, and the non-zero
    eigenvalues of sigma1·sigma2 are those of (A1A2ᵀ)(A1A2ᵀ)ᵀ, so
    tr((sigma1·sigma2)^½) = sum of the singular values of A1A2ᵀ: no 2048² sqrtm (which
    pytorch-fid and psr use) and none of its round-off on the singular product.
    """
    f1, f2 = features1.astype(np.float64), features2.astype(np.float64)
    a1 = (f1 - f1.mean(0)) / np.sqrt(len(f1) - 1)
    a2 = (f2 - f2.mean(0)) / np.sqrt(len(f2) - 1)
    diff = f1.mean(0) - f2.mean(0)
    trace_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2 * trace_sqrt)


def random_images(count: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth images (a low-resolution pattern upsampled) plus noise, like photos more than noise.
    coarse = rng.uniform(0, 255, size=(count, 4, 4, 3))
    smooth = np.kron(coarse, np.ones((1, size // 4 + 1, size // 4 + 1, 1)))[:, :size, :size]
    return np.clip(smooth + rng.normal(0, 20, size=smooth.shape), 0, 255).astype(np.uint8)


def assert_features_close(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(expected).max()))
    assert actual.shape == expected.shape
    error = float(np.abs(actual - expected).max())
    assert error <= FEATURE_TOLERANCE * scale, f"max error {error:.3g} at feature scale {scale:.3g}"


# === Fixtures ===


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("inception_weights")


@pytest.fixture(scope="module")
def fid_net(weights_dir):
    model = random_inception(fid=True, seed=1)
    # The official file predates torch's zip format: save it in the legacy layout.
    path = weights_dir / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    return model, str(path)


@pytest.fixture(scope="module")
def torchvision_net(weights_dir):
    model = random_inception(fid=False, seed=2)
    path = weights_dir / "inception_v3_google-0cc3c7bd.pth"
    torch.save(model.state_dict(), path)
    return model, str(path)


@pytest.fixture(scope="module")
def fid_extractor(fid_net):
    return PytorchFidFeatures(fid_net[1], batch_size=2)


@pytest.fixture(scope="module")
def torchvision_extractor(torchvision_net):
    return TorchvisionInceptionFeatures(torchvision_net[1], batch_size=2)


# === Parity ===


class TestPytorchFidFeatures:
    def test_matches_torch_restatement_on_64_and_299_inputs(self, fid_net, fid_extractor):
        model, _ = fid_net
        for count, size, seed in ((2, 64, 0), (1, 299, 1)):
            images = random_images(count, size, seed)
            expected = torch_features(model, pytorch_fid_input(images))
            assert_features_close(fid_extractor(images), expected)

    @pytest.mark.slow  # psr's FID takes one 2048×2048 scipy sqrtm: 10-90 s on a shared 2-core CPU
    def test_fid_of_two_folders_matches_numpy_oracle(self, fid_net, fid_extractor, tmp_path):
        from PIL import Image

        model, _ = fid_net
        folders = {}
        for name, seed, count in (("generated", 3, 3), ("reference", 4, 4)):
            images = random_images(count, 64, seed)
            folder = tmp_path / name
            folder.mkdir()
            for index, image in enumerate(images):
                Image.fromarray(image).save(folder / f"{index}.png")
            folders[name] = (str(folder), images)
        scores = evaluate_folders(
            folders["generated"][0], folders["reference"][0], ["fid"],
            extractor=fid_extractor, cache_dir=None, progress=False,
        )
        expected = frechet_oracle(
            torch_features(model, pytorch_fid_input(folders["generated"][1])),
            torch_features(model, pytorch_fid_input(folders["reference"][1])),
        )
        assert expected > 1.0  # the two folders differ: the comparison is not 0 ≈ 0
        # sqrtm's round-off on the rank-deficient product is ~1e-4 of tr(sigma) here (measured
        # 2.5e-4 against this exact oracle at FID ≈ 850); the features' own error adds ~1e-6.
        assert scores["fid"] == pytest.approx(expected, abs=1e-3)


class TestTorchvisionFeatures:
    def test_matches_torch_restatement_on_64_256_and_299_inputs(self, torchvision_net, torchvision_extractor):
        model, _ = torchvision_net
        for size, seed in ((64, 5), (256, 6), (299, 7)):
            images = random_images(1, size, seed)
            expected = torch_features(model, stargan_v2_input(images))
            assert_features_close(torchvision_extractor(images), expected)

    def test_pooling_variant_changes_the_features(self, fid_net, fid_extractor):
        # The FID weights through the torchvision block table (counting padding, no max-pool in
        # Mixed_7c) must differ well beyond the tolerance: the variant table is not inert.
        from psr.metrics.fid_inception import build_inception_v3, load_torch_inception_weights
        from psr.torch_weights import read_torch_state_dict

        images = random_images(1, 299, 8)
        fid_extractor(images)  # builds fid_extractor._model
        counting = build_inception_v3("torchvision")
        state = {key: value for key, value in read_torch_state_dict(fid_net[1]).items() if not key.startswith("fc.")}
        load_torch_inception_weights(counting, state, "torchvision", "test")
        pixels = images.astype(np.float32) / 127.5 - 1.0
        fid_features = np.asarray(fid_extractor._model(pixels))
        counting_features = np.asarray(counting(pixels))
        scale = max(1.0, float(np.abs(fid_features).max()))
        assert np.abs(fid_features - counting_features).max() > 100 * FEATURE_TOLERANCE * scale


# === Weights files ===


class TestWeightsFiles:
    def test_other_variants_file_is_refused(self, fid_net, torchvision_net):
        with pytest.raises(CheckpointError, match="looks like the torchvision file"):
            PytorchFidFeatures(torchvision_net[1])(random_images(1, 75, 0))
        with pytest.raises(CheckpointError, match="looks like the pytorch-fid file"):
            TorchvisionInceptionFeatures(fid_net[1])(random_images(1, 75, 0))

    def test_cache_key_names_the_extractor_and_the_file_hash(self, fid_net, torchvision_net, tmp_path):
        _, fid_path = fid_net
        _, tv_path = torchvision_net
        key = PytorchFidFeatures(fid_path).cache_key
        assert key.startswith("pytorch-fid-") and key == PytorchFidFeatures(fid_path).cache_key
        assert TorchvisionInceptionFeatures(tv_path).cache_key.startswith("torchvision-")
        changed = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
        changed.write_bytes(open(fid_path, "rb").read() + b"\0")
        assert PytorchFidFeatures(str(changed)).cache_key != key

    def test_auto_uses_the_paper_file_found_in_the_torch_cache(self, fid_net, tmp_path, monkeypatch):
        _, path = fid_net
        hub = tmp_path / "torch" / "hub" / "checkpoints"
        hub.mkdir(parents=True)
        os.symlink(path, hub / os.path.basename(path))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        extractor = make_feature_extractor("auto", protocol="single_modal")
        assert isinstance(extractor, PytorchFidFeatures)
        assert extractor.weights == str(hub / os.path.basename(path))

    def test_missing_paper_weights_is_one_line_naming_file_and_url(self, tmp_path, monkeypatch):
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
        for protocol, file_name in (("single_modal", "pt_inception-2015-12-05-6726825d.pth"),
                                    ("multimodal", "inception_v3_google-0cc3c7bd.pth")):
            with pytest.raises(CheckpointError) as caught:
                make_feature_extractor("auto", protocol=protocol)
            message = str(caught.value)
            assert "\n" not in message and file_name in message and "https://" in message
        assert find_weights_file("pytorch-fid", tmp_path) is None

    def test_folder_given_as_weights_is_searched(self, torchvision_net, tmp_path):
        _, path = torchvision_net
        assert find_weights_file("torchvision", os.path.dirname(path)) == path
        assert isinstance(make_feature_extractor("torchvision", os.path.dirname(path)), TorchvisionInceptionFeatures)


def test_eval_results_are_tagged_with_the_extractor(fid_net, tmp_path):
    # evaluate_model's record carries the extractor name and cache key (eval.json).
    from psr.evaluation import extractor_record

    _, path = fid_net
    record = extractor_record(PytorchFidFeatures(path))
    assert record["features"] == "pytorch-fid" and record["features_key"].startswith("pytorch-fid-")
    json.dumps(record)
