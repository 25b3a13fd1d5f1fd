"""The fixed-width mobile ResNet equals a PyTorch re-statement of `sub_mobile_resnet` (spec compression §3.3)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from psr.models.mobile_resnet import MobileResnetGenerator  # noqa: E402

CONFIG = (4, 6, 2, 8, 4, 2, 6, 4)
NUM_BLOCKS = 3
EPS = float(np.finfo(np.float32).eps)
# Two float32 implementations of the same 18 convs: summation order differs in every one
# (largest reduction 7·7·8 = 392 terms); unit-scale IN activations, errors add in quadrature.
TOLERANCE = math.sqrt(3 + 4 * NUM_BLOCKS + 3) * EPS * math.sqrt(392) * 2


def to_torch(kernel, depthwise=False):
    """Keras conv (kh, kw, in, out) → [out, in, kh, kw]; transposed conv (kh, kw, out, in) → PyTorch's
    [in, out, kh, kw] by the same permutation; depthwise (kh, kw, C, 1) → [C, 1, kh, kw]."""
    value = np.asarray(kernel)
    value = value.transpose(2, 3, 0, 1) if depthwise else value.transpose(3, 2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(value))


def torch_sub_mobile_resnet(model, x):
    """NCHW re-statement of the official sub-network, reading the Keras weights."""
    def bias(layer):
        return torch.from_numpy(np.asarray(layer.bias))

    def conv(name, h, stride=1, padding=0):
        layer = model.get_layer(name)
        return F.conv2d(h, to_torch(layer.kernel), bias(layer), stride=stride, padding=padding)

    def block_conv(layer, h, groups=1):
        return F.conv2d(h, to_torch(layer.kernel, depthwise=groups > 1), bias(layer), groups=groups)

    def up(name, h):
        layer = model.get_layer(name)
        return F.conv_transpose2d(h, to_torch(layer.kernel), bias(layer), stride=2, padding=1, output_padding=1)

    norm = lambda h: F.instance_norm(h, eps=1e-5)  # noqa: E731
    h = torch.clamp(x, -1, 1)
    h = F.relu(norm(conv("stem_conv", F.pad(h, (3, 3, 3, 3), mode="reflect"))))
    h = F.relu(norm(conv("down1_conv", h, stride=2, padding=1)))
    h = F.relu(norm(conv("down2_conv", h, stride=2, padding=1)))
    features = [h]
    for index in range(NUM_BLOCKS):
        block = model.get_layer(f"block{index}")
        r = F.pad(h, (1, 1, 1, 1), mode="reflect")
        r = block_conv(block.pointwise1, norm(block_conv(block.depthwise1, r, groups=r.shape[1])))
        r = F.relu(norm(r))
        r = F.pad(r, (1, 1, 1, 1), mode="reflect")
        r = block_conv(block.pointwise2, norm(block_conv(block.depthwise2, r, groups=r.shape[1])))
        h = h + norm(r)
        features.append(h)
    h = F.relu(norm(up("up1_conv", h)))
    h = F.relu(norm(up("up2_conv", h)))
    h = torch.tanh(conv("final_conv", F.pad(h, (3, 3, 3, 3), mode="reflect")))
    return h, features


def test_matches_pytorch_restatement():
    model = MobileResnetGenerator(CONFIG, num_blocks=NUM_BLOCKS)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if weight.path.endswith("bias"):
            weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
    x = rng.uniform(-1.1, 1.1, (2, 32, 32, 3)).astype("float32")
    image, features = model.translate_and_features(x)
    with torch.no_grad():
        want_image, want_features = torch_sub_mobile_resnet(model, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    assert np.abs(np.asarray(image) - want_image.numpy().transpose(0, 2, 3, 1)).max() <= TOLERANCE
    # One feature per block here (3 blocks → 1 per group): encoder output, then blocks 1, 2, 3.
    for got, want in zip(features, want_features):
        assert np.abs(np.asarray(got) - want.numpy().transpose(0, 2, 3, 1)).max() <= TOLERANCE * 10


# === A real PyTorch module with the official layout, converted through its state dict ===

from torch import nn  # noqa: E402

from psr.errors import CheckpointError  # noqa: E402
from psr.models.mobile_resnet import SuperMobileResnetGenerator  # noqa: E402
from psr.models.torch_import import (  # noqa: E402
    convert_mobile_resnet_generator,
    infer_mobile_resnet_args,
    mobile_generator_from_torch_state_dict,
)


class TorchSeparableConv(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(a, a, 3, groups=a), nn.InstanceNorm2d(a), nn.Conv2d(a, b, 1))

    def forward(self, x):
        return self.conv(x)


class TorchMobileBlock(nn.Module):
    def __init__(self, stream, hidden):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), TorchSeparableConv(stream, hidden), nn.InstanceNorm2d(hidden), nn.ReLU(),
            nn.Dropout(0.0), nn.ReflectionPad2d(1), TorchSeparableConv(hidden, stream), nn.InstanceNorm2d(stream),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class TorchSubMobileResnet(nn.Module):
    """`sub_mobile_resnet` layout written from spec §3.1–3.3 (indices of `self.model`)."""

    def __init__(self, config, num_blocks):
        super().__init__()
        c0, c1, c2, c3, c4, c5, c6, c7 = config
        stream, hidden = 4 * c2, (4 * c3, 4 * c4, 4 * c5)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, c0, 7), nn.InstanceNorm2d(c0), nn.ReLU(),
                  nn.Conv2d(c0, 2 * c1, 3, 2, 1), nn.InstanceNorm2d(2 * c1), nn.ReLU(),
                  nn.Conv2d(2 * c1, stream, 3, 2, 1), nn.InstanceNorm2d(stream), nn.ReLU()]
        layers += [TorchMobileBlock(stream, hidden[i // (num_blocks // 3)]) for i in range(num_blocks)]
        layers += [nn.ConvTranspose2d(stream, 2 * c6, 3, 2, 1, 1), nn.InstanceNorm2d(2 * c6), nn.ReLU(),
                   nn.ConvTranspose2d(2 * c6, c7, 3, 2, 1, 1), nn.InstanceNorm2d(c7), nn.ReLU(),
                   nn.ReflectionPad2d(3), nn.Conv2d(c7, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x.clamp(-1, 1))


def torch_state(module):
    return {key: value.detach().numpy() for key, value in module.state_dict().items()}


def test_released_student_converts_and_matches():
    torch.manual_seed(0)
    reference = TorchSubMobileResnet(CONFIG, NUM_BLOCKS).eval()
    state = torch_state(reference)
    assert infer_mobile_resnet_args(state) == {
        "config": CONFIG, "input_channels": 3, "output_channels": 3, "num_blocks": NUM_BLOCKS}
    model = mobile_generator_from_torch_state_dict(state)
    x = np.random.default_rng(1).uniform(-1.1, 1.1, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert np.abs(np.asarray(model(x)) - want).max() <= TOLERANCE


def test_supernet_state_dict_converts_by_the_same_names():
    torch.manual_seed(2)
    reference = TorchSubMobileResnet((8,) * 8, NUM_BLOCKS).eval()  # a supernet's tensors are the widest sub-net's
    supernet = SuperMobileResnetGenerator(filters=8, num_blocks=NUM_BLOCKS)
    convert_mobile_resnet_generator(torch_state(reference), supernet)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    assert np.abs(np.asarray(supernet(x)) - want).max() <= TOLERANCE


def test_mismatched_state_dict_is_refused_before_assigning():
    state = torch_state(TorchSubMobileResnet(CONFIG, NUM_BLOCKS))
    model = MobileResnetGenerator((8,) * 8, num_blocks=NUM_BLOCKS)
    before = [np.asarray(w).copy() for w in model.weights]
    with pytest.raises(CheckpointError, match=r"mis-shaped keys: model.1.bias \(4,\) \(expected \(8,\)\), model.1.weight"):
        convert_mobile_resnet_generator(state, model)
    assert all(np.array_equal(a, np.asarray(w)) for a, w in zip(before, model.weights))
    with pytest.raises(CheckpointError, match="not a GAN-compression mobile ResNet"):
        infer_mobile_resnet_args({"model.1.weight": np.zeros((4, 3, 7, 7))})


def test_import_torch_cli_makes_a_compression_run_of_a_released_student(tmp_path):
    import tensorflow as tf
    import yaml

    from psr import cli
    from psr.config import load_run_config

    torch.manual_seed(4)
    reference = TorchSubMobileResnet(CONFIG, NUM_BLOCKS).eval()
    checkpoint = tmp_path / "latest_net_G.pth"
    torch.save(reference.state_dict(), checkpoint)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "method": "compression", "data": {"load_size": 32, "crop_size": 32},
        "model": {"teacher": {"run": str(tmp_path / "no_teacher")}, "student": {"filters": 8, "candidates": [8, 4]},
                  "head": {"num_patches": 64}},
    }))
    out = tmp_path / "run"
    assert cli.main(["import-torch", str(checkpoint), "--spec", str(spec), "-o", str(out), "--export"]) == 0
    cfg = load_run_config(out)
    assert cfg.model.student.fixed_config == "_".join(map(str, CONFIG))
    x = np.random.default_rng(5).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    served = tf.saved_model.load(str(out / "export")).signatures["serving_default"](images=tf.constant(x))["images"]
    assert np.abs(served.numpy() - want).max() <= TOLERANCE
