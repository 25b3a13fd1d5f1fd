"""DRNSeg (DRN-D-22, DRN-D-105): parity with a PyTorch re-statement of fyu/drn + DRNSeg on random weights."""

import math

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.models.drn import FixedBilinearUpsample, bilinear_up_kernel, build_drn_seg, drn_seg_from_torch


def _torch_drn_seg(arch, classes=19, seed=0):
    """fyu/drn `DRN` (arch D) + `DRNSeg`, re-stated; BN statistics randomised so the loader must map them."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=(1, 1)):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation[0], dilation[0], bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation[1], dilation[1], bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=(1, 1)):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation[1], dilation[1], bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = downsample

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = torch.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    block, layers = {"drn_d_22": (Basic, [1, 1, 2, 2, 2, 2, 1, 1]),
                     "drn_d_105": (Bottleneck, [1, 1, 3, 4, 23, 3, 1, 1])}[arch]
    channels = (16, 32, 64, 128, 256, 512, 512, 512)
    state = {"inplanes": channels[0]}

    def conv_layers(ch, convs, stride=1, dilation=1):
        modules = []
        for i in range(convs):
            modules += [nn.Conv2d(state["inplanes"], ch, 3, stride if i == 0 else 1, dilation, dilation, bias=False),
                        nn.BatchNorm2d(ch), nn.ReLU()]
            state["inplanes"] = ch
        return nn.Sequential(*modules)

    def make_layer(planes, blocks, stride=1, dilation=1, new_level=True):
        downsample = None
        if stride != 1 or state["inplanes"] != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(state["inplanes"], planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
        mods = [block(state["inplanes"], planes, stride, downsample, dilation=first)]
        state["inplanes"] = planes * block.expansion
        mods += [block(state["inplanes"], planes, dilation=(dilation, dilation)) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    torch.manual_seed(seed)
    base = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 16, 7, 1, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        conv_layers(channels[0], layers[0]), conv_layers(channels[1], layers[1], stride=2),
        make_layer(channels[2], layers[2], stride=2), make_layer(channels[3], layers[3], stride=2),
        make_layer(channels[4], layers[4], dilation=2, new_level=False),
        make_layer(channels[5], layers[5], dilation=4, new_level=False),
        conv_layers(channels[6], layers[6], dilation=2), conv_layers(channels[7], layers[7]),
    )

    class Seg(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base
            self.seg = nn.Conv2d(512, classes, 1)
            self.up = nn.ConvTranspose2d(classes, classes, 16, stride=8, padding=4, groups=classes, bias=False)
            w = self.up.weight.data
            f = math.ceil(16 / 2)
            c = (2 * f - 1 - f % 2) / (2.0 * f)
            for i in range(16):
                for j in range(16):
                    w[:, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))

        def forward(self, x):
            return torch.log_softmax(self.up(self.seg(self.base(x))), dim=1)

    net = Seg().eval()
    # Default init gives near-uniform class scores; spread them so the parity check sees the logits.
    net.seg.weight.data *= 50.0
    generator = torch.Generator().manual_seed(seed + 1)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    return torch, net


def _save(torch, net, path, legacy):
    # The public DRN files were saved through nn.DataParallel: keys carry "module.".
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def _compare(arch, size, tmp_path, legacy):
    torch, net = _torch_drn_seg(arch)
    path = tmp_path / f"{arch}.pth"
    _save(torch, net, path, legacy)
    model = drn_seg_from_torch(path, arch)
    assert model.count_params() == sum(v.numel() for k, v in net.state_dict().items()
                                       if not k.endswith("num_batches_tracked"))
    images = np.random.default_rng(3).normal(size=(1, size[0], size[1], 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    actual = np.asarray(model(images, training=False))
    assert actual.shape == expected.shape == (1, size[0], size[1], 19)
    return actual, expected


def test_drn_d_22_matches_pytorch(tmp_path):
    actual, expected = _compare("drn_d_22", (64, 128), tmp_path, legacy=True)
    # Log-probabilities of O(1..10) after 22 conv layers of ≤ 4608-term sums: a relative float32
    # error of ~22·eps·sqrt(4608) ≈ 2e-4 in the worst case; the observed error is far smaller.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-4 * max(1.0, np.abs(expected).max()))
    assert np.mean(actual.argmax(-1) == expected.argmax(-1)) > 0.999


def test_drn_d_105_structure_and_forward(tmp_path):
    actual, expected = _compare("drn_d_105", (32, 32), tmp_path, legacy=False)
    # 105 layers: the same bound with 105 in place of 22.
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-3 * max(1.0, np.abs(expected).max()))


def test_up_kernel_is_fill_up_weights_and_upsamples_constants():
    kernel = bilinear_up_kernel(16)
    # f = 8, c = (16 - 1 - 0) / 16 = 0.9375: tap i = 1 - |i/8 - 0.9375|.
    assert kernel[0, 0] == pytest.approx(0.0625 ** 2)
    assert kernel[7, 7] == pytest.approx(0.9375 ** 2)
    layer = FixedBilinearUpsample(2)
    out = np.asarray(layer(np.ones((1, 4, 4, 2), np.float32)))
    assert out.shape == (1, 32, 32, 2)
    # Away from the border, the stride-8 overlaps of the bilinear taps sum to 1.
    np.testing.assert_allclose(out[:, 4:-4, 4:-4], 1.0, atol=1e-6)


def test_wrong_state_dict_is_refused_naming_keys(tmp_path):
    torch, net = _torch_drn_seg("drn_d_22")
    path = tmp_path / "d22.pth"
    _save(torch, net, path, legacy=False)
    with pytest.raises(CheckpointError, match=r"missing keys: base\.3\.0\.bn3\.bias.*mis-shaped: base\.3\.0\.conv1\.weight") as error:
        drn_seg_from_torch(path, "drn_d_105")
    assert "\n" not in str(error.value)


def test_config_roundtrip_of_up_layer():
    layer = FixedBilinearUpsample(5, name="up")
    assert FixedBilinearUpsample.from_config(layer.get_config()).channels == 5
    with pytest.raises(ValueError, match="arch"):
        build_drn_seg("drn_c_26")
