"""Import of StarGAN v2 / Hneg_SRC nets checkpoints, against a small PyTorch re-statement of the networks.

The PyTorch modules below are a test-only oracle written from spec multimodal.md §2
(the Hneg_SRC `core/model_src.py` layout and state-dict names); they are not psr code.
Random weights are saved with `torch.save` in the released file's layout
(`{"generator": ..., "mapping_network": ..., "style_encoder": ...}`).

Tolerance: both sides compute in float32. Each conv / linear layer rounds a sum of
n <= 288 terms, a relative error of about eps·sqrt(n) ≈ 2e-6 on either side; the
generator stacks 22 such layers whose activations instance norm keeps of order 1, so
the two implementations differ by at most 22 · 2 · 2e-6 ≈ 1e-4 of the output scale
(typically far less, as the errors do not all add up).
"""

import math
import sys

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.models import stargan2_torch
from psr.models.stargan2_torch import (
    infer_stargan2_args,
    load_stargan2_nets,
    stargan2_from_torch_checkpoint,
)

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# === PyTorch oracle (Hneg_SRC layout) ===


def lrelu(x):
    return F.leaky_relu(x, 0.2)


class TorchAdaIN(nn.Module):
    def __init__(self, style_dim, channels):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, x, s):
        h = self.fc(s)[:, :, None, None]
        gamma, beta = h.chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class TorchResBlk(nn.Module):
    def __init__(self, dim_in, dim_out, normalize=False, downsample=False):
        super().__init__()
        self.normalize, self.downsample, self.learned = normalize, downsample, dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def forward(self, x):
        shortcut = self.conv1x1(x) if self.learned else x
        if self.downsample:
            shortcut = F.avg_pool2d(shortcut, 2)
        r = self.norm1(x) if self.normalize else x
        r = self.conv1(lrelu(r))
        if self.downsample:
            r = F.avg_pool2d(r, 2)
        if self.normalize:
            r = self.norm2(r)
        r = self.conv2(lrelu(r))
        return (shortcut + r) / math.sqrt(2)


class TorchConvDown(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_out, 4, 2, 1)
        self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)

    def forward(self, x, s=None):
        return self.conv1(lrelu(self.norm1(x)))


class TorchConvUp(nn.Module):
    def __init__(self, dim_in, dim_out, style_dim=None):
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.styled = style_dim is not None
        self.norm1 = TorchAdaIN(style_dim, dim_in) if self.styled else nn.InstanceNorm2d(dim_in, affine=True)

    def forward(self, x, s):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm1(x, s) if self.styled else self.norm1(x)
        return self.conv1(lrelu(x))


class TorchAdainResBlk(nn.Module):
    def __init__(self, dim, style_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1)
        self.norm1 = TorchAdaIN(style_dim, dim)
        self.norm2 = TorchAdaIN(style_dim, dim)

    def forward(self, x, s):
        r = self.conv1(lrelu(self.norm1(x, s)))
        r = self.conv2(lrelu(self.norm2(r, s)))
        return (r + x) / math.sqrt(2)


class TorchGenerator(nn.Module):
    def __init__(self, dim_in, max_dim, style_dim, num_res=4, num_adain=4, style_up=False):
        super().__init__()
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode, self.decode = nn.ModuleList(), nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        ups = []
        for _ in range(2):
            dim_out = min(2 * dim_in, max_dim)
            self.encode.append(TorchConvDown(dim_in, dim_out))
            ups.insert(0, TorchConvUp(dim_out, dim_in, style_dim if style_up else None))
            dim_in = dim_out
        for _ in range(num_res):
            self.encode.append(TorchResBlk(dim_out, dim_out, normalize=True))
        for _ in range(num_adain):
            self.decode.append(TorchAdainResBlk(dim_out, style_dim))
        for up in ups:
            self.decode.append(up)
        self.num_down = 2

    def features(self, x):
        x = self.from_rgb(x)
        feats = []
        for index, block in enumerate(self.encode):
            x = block(x)
            if index >= self.num_down - 1:
                feats.append(x)
        return feats

    def forward(self, x, s):
        x = self.features(x)[-1]
        for block in self.decode:
            x = block(x, s)
        return self.to_rgb(x)


class TorchMapping(nn.Module):
    def __init__(self, latent_dim, style_dim, num_domains, hidden):
        super().__init__()
        layers = [nn.Linear(latent_dim, hidden), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(hidden, hidden), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, style_dim))
            for _ in range(num_domains)
        )

    def forward(self, z, y):
        h = self.shared(z)
        out = torch.stack([head(h) for head in self.unshared], dim=1)
        return out[torch.arange(y.shape[0]), y]


def trunk_layers(img_size, dim_in, max_dim):
    blocks = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    for _ in range(int(np.log2(img_size)) - 2):
        dim_out = min(2 * dim_in, max_dim)
        blocks.append(TorchResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


class TorchStyleEncoder(nn.Module):
    def __init__(self, img_size, style_dim, num_domains, dim_in, max_dim):
        super().__init__()
        blocks, dim_out = trunk_layers(img_size, dim_in, max_dim)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))

    def forward(self, x, y):
        h = self.shared(x).flatten(1)
        out = torch.stack([head(h) for head in self.unshared], dim=1)
        return out[torch.arange(y.shape[0]), y]


class TorchDiscriminator(nn.Module):
    def __init__(self, img_size, num_domains, dim_in, max_dim):
        super().__init__()
        blocks, dim_out = trunk_layers(img_size, dim_in, max_dim)
        self.main = nn.Sequential(*blocks, nn.Conv2d(dim_out, num_domains, 1, 1, 0))

    def forward(self, x, y):
        out = self.main(x).flatten(1)
        return out[torch.arange(y.shape[0]), y]


def randomized(net, seed):
    """He-normal weights (spec §2.7) and random biases / norm affine values, so every tensor matters."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.dim() > 1:
                nn.init.kaiming_normal_(param, mode="fan_in", nonlinearity="relu")
            elif "norm" in name and name.endswith("weight") or name.startswith("to_rgb.0.weight"):
                param.normal_(1.0, 0.3)
            else:
                param.normal_(0.0, 0.3)
    return net.eval()


TINY = dict(img_size=32, dim_in=8, max_dim=32, style_dim=16, latent_dim=8, num_domains=3, hidden=32)


def tiny_nets(style_up=False, with_discriminator=False, seed=0):
    t = TINY
    nets = {
        "generator": randomized(TorchGenerator(t["dim_in"], t["max_dim"], t["style_dim"], style_up=style_up), seed),
        "mapping_network": randomized(TorchMapping(t["latent_dim"], t["style_dim"], t["num_domains"], t["hidden"]),
                                      seed + 1),
        "style_encoder": randomized(
            TorchStyleEncoder(t["img_size"], t["style_dim"], t["num_domains"], t["dim_in"], t["max_dim"]), seed + 2),
    }
    if with_discriminator:
        nets["discriminator"] = randomized(
            TorchDiscriminator(t["img_size"], t["num_domains"], t["dim_in"], t["max_dim"]), seed + 3)
    return nets


def save(nets, path):
    torch.save({name: net.state_dict() for name, net in nets.items()}, path)
    return path


def to_nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))


def to_nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


def inputs(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    s = rng.standard_normal((2, TINY["style_dim"])).astype("float32")
    z = rng.standard_normal((2, TINY["latent_dim"])).astype("float32")
    return x, s, z, np.array([2, 0])


# === Parity ===


@pytest.mark.parametrize("style_up", [False, True])
def test_imported_networks_match_pytorch(tmp_path, style_up):
    nets = tiny_nets(style_up=style_up, with_discriminator=True)
    path = save(nets, tmp_path / "100000_nets_ema.ckpt")
    imported = stargan2_from_torch_checkpoint(path)
    args = imported["args"]
    # G's widths 8, 16, 32 never reach a cap, so the official 512 is kept (same network).
    assert args["generator"] == {"image_size": 32, "style_dim": 16, "filters": 8, "max_filters": 512, "num_down": 2,
                                 "num_res": 4, "num_adain": 4, "style_upsampling": style_up}
    assert args["mapping"] == {"latent_dim": 8, "style_dim": 16, "num_domains": 3, "hidden": 32,
                               "shared_layers": 4, "head_layers": 4}
    assert args["style_encoder"] == {"image_size": 32, "filters": 8, "max_filters": 32, "style_dim": 16,
                                     "num_domains": 3}
    assert args["discriminator"] == {"image_size": 32, "filters": 8, "max_filters": 32, "num_domains": 3}

    x, s, z, y = inputs()
    with torch.no_grad():
        expected_images = to_nhwc(nets["generator"](to_nchw(x), torch.from_numpy(s)))
        expected_features = [to_nhwc(f) for f in nets["generator"].features(to_nchw(x))]
        expected_style = nets["mapping_network"](torch.from_numpy(z), torch.from_numpy(y)).numpy()
        expected_code = nets["style_encoder"](to_nchw(x), torch.from_numpy(y)).numpy()
        expected_logits = nets["discriminator"](to_nchw(x), torch.from_numpy(y)).numpy()
    generator = imported["generator"]
    assert_close(generator(x, s), expected_images)
    features = generator.encode(x)
    assert len(features) == len(expected_features) == 5
    for feature, expected in zip(features, expected_features):
        assert_close(feature, expected)
    assert_close(imported["mapping"](z, y), expected_style)
    assert_close(imported["style_encoder"](x, y), expected_code)
    assert_close(imported["discriminator"](x, y), expected_logits)


@pytest.mark.parametrize("zip_format", [True, False])  # torch >= 1.6 zip; the legacy format of older torch
def test_nets_ema_file_is_read_without_torch(tmp_path, monkeypatch, zip_format):
    path = tmp_path / "nets_ema.ckpt"
    torch.save({name: net.state_dict() for name, net in tiny_nets().items()}, path,
               _use_new_zipfile_serialization=zip_format)

    reference = torch.load(path, weights_only=True)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails: no fallback to torch.load
    nets = load_stargan2_nets(path)
    assert sorted(nets) == ["generator", "mapping_network", "style_encoder"]
    assert sorted(stargan2_from_torch_checkpoint(path)) == ["args", "generator", "mapping", "style_encoder"]
    for name, state_dict in nets.items():
        assert list(state_dict) == list(reference[name])
        for key, value in state_dict.items():
            np.testing.assert_array_equal(value, reference[name][key].numpy())


def test_data_parallel_prefix_is_stripped(tmp_path):
    nets = tiny_nets()
    path = tmp_path / "dp.ckpt"
    torch.save({name: {f"module.{k}": v for k, v in net.state_dict().items()} for name, net in nets.items()}, path)
    imported = stargan2_from_torch_checkpoint(path)
    x, s, _, _ = inputs()
    with torch.no_grad():
        expected = to_nhwc(nets["generator"](to_nchw(x), torch.from_numpy(s)))
    assert_close(imported["generator"](x, s), expected)


# === Refusals: one line naming the problem and what was expected ===


def one_line_error(path, match):
    with pytest.raises(CheckpointError, match=match) as info:
        stargan2_from_torch_checkpoint(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_plain_state_dict_is_refused(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save(tiny_nets()["generator"].state_dict(), path)
    message = one_line_error(path, "not a StarGAN v2 / Hneg_SRC nets checkpoint")
    assert "generator, mapping_network, style_encoder" in message


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"this is not a checkpoint")
    one_line_error(path, "Cannot read")


def test_upstream_stargan2_generator_is_refused(tmp_path):
    nets = {name: net.state_dict() for name, net in tiny_nets().items()}
    upstream = TorchResBlk(8, 16, normalize=True, downsample=True).state_dict()
    nets["generator"] = {**{k: v for k, v in nets["generator"].items() if not k.startswith("encode.0.")},
                         **{f"encode.0.{k}": v for k, v in upstream.items()}}
    path = tmp_path / "upstream.ckpt"
    torch.save(nets, path)
    one_line_error(path, "upstream StarGAN v2 generator")


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    nets = {name: dict(net.state_dict()) for name, net in tiny_nets().items()}
    del nets["mapping_network"]["unshared.1.4.bias"]
    nets["mapping_network"]["extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.ckpt"
    torch.save(nets, path)
    message = one_line_error(path, "`mapping_network` state dict does not match")
    assert "missing keys: unshared.1.4.bias" in message and "unexpected keys: extra.weight" in message


def test_misshaped_key_is_refused_before_anything_is_assigned(tmp_path, monkeypatch):
    nets = {name: dict(net.state_dict()) for name, net in tiny_nets().items()}
    nets["generator"]["decode.1.conv1.weight"] = torch.zeros(32, 32, 1, 1)
    path = tmp_path / "misshaped.ckpt"
    torch.save(nets, path)
    message = one_line_error(path, "mis-shaped keys: decode.1.conv1.weight")
    assert "(32, 32, 1, 1) (expected (32, 32, 3, 3))" in message


def test_networks_from_different_runs_are_refused(tmp_path):
    nets = {name: net.state_dict() for name, net in tiny_nets().items()}
    other = TorchMapping(TINY["latent_dim"], 24, TINY["num_domains"], TINY["hidden"])
    nets["mapping_network"] = other.state_dict()
    path = tmp_path / "mixed.ckpt"
    torch.save(nets, path)
    one_line_error(path, "disagree on the style size")
    nets = {name: net.state_dict() for name, net in tiny_nets().items()}
    with pytest.raises(CheckpointError, match="disagree on the number of domains"):
        infer_stargan2_args({**nets, "mapping_network": TorchMapping(8, 16, 5, 32).state_dict()})


def test_width_cap_is_inferred():
    # Widths 8 -> 16 -> 16: the cap is 16; without a cap the official 512 stands.
    generator = {k: v.numpy() for k, v in TorchGenerator(8, 16, 4, num_res=1, num_adain=1).state_dict().items()}
    assert stargan2_torch.infer_generator_args(generator)["max_filters"] == 16
    generator = {k: v.numpy() for k, v in TorchGenerator(8, 64, 4, num_res=1, num_adain=1).state_dict().items()}
    assert stargan2_torch.infer_generator_args(generator)["max_filters"] == 512
