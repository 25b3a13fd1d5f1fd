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
