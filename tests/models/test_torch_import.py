"""Tests of the PyTorch -> psr generator import against a PyTorch re-statement of the networks.

The PyTorch modules below are a test-only oracle written for these tests from
the definitions in CUT's and CycleGAN's `networks.py` (same `nn.Sequential`
indices, same state-dict names); they are not psr code. The whole file is
skipped when PyTorch is absent; the missing-PyTorch message is tested in
test_torch_missing.py.
"""

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.models.resnet_generator import ResnetGenerator
from psr.models.torch_import import (
    convert_resnet_generator,
    generator_from_torch_state_dict,
    infer_resnet_generator_args,
    load_torch_state_dict,
)

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


# === PyTorch oracle ===


def binomial(taps):
    taps = torch.tensor(taps, dtype=torch.float32)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


class BlurDown(nn.Module):
    """Reflect pad 1, fixed [1,2,1]x[1,2,1]/16 per channel, stride 2 (CUT `Downsample`)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", binomial([1, 2, 1])[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class BlurUp(nn.Module):
    """Replicate pad 1, transposed [1,3,3,1]^2/64*4 filter, stride 2, padding 2, crop 1 (CUT `Upsample`)."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("filt", (binomial([1, 3, 3, 1]) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x):
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        out = F.conv_transpose2d(padded, self.filt, stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:-1, 1:-1]


class ResBlock(nn.Module):
    def __init__(self, dim, dropout):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True)]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class TorchResnetGenerator(nn.Module):
    def __init__(self, ngf, n_blocks, antialias, antialias_up, dropout=False, in_ch=3, out_ch=3):
        super().__init__()
        model = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            if antialias:
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=1, padding=1)]
                model += [nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True), BlurDown(ngf * mult * 2)]
            else:
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1)]
                model += [nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
        model += [ResBlock(ngf * 4, dropout) for _ in range(n_blocks)]
        for mult in (4, 2):
            if antialias_up:
                model += [BlurUp(ngf * mult), nn.Conv2d(ngf * mult, ngf * mult // 2, 3, padding=1)]
            else:
                model += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1)]
            model += [nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


def make_torch_generator(seed=0, **kwargs):
    torch.manual_seed(seed)
    net = TorchResnetGenerator(**kwargs)
    with torch.no_grad():  # PyTorch's default init leaves biases small; make them matter
        for name, param in net.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.2)
    return net.eval()


def state_dict_of(net):
    return {name: value.numpy().copy() for name, value in net.state_dict().items()}


def max_error(net, generator, height, width, channels=3, seed=1):
    x = np.random.default_rng(seed).uniform(-1, 1, size=(2, height, width, channels)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    out = np.asarray(generator(x))
    assert out.shape == expected.shape
    return np.abs(out - expected).max()


ARCHITECTURES = {
    "cut": dict(ngf=8, n_blocks=9, antialias=True, antialias_up=True),
    "cyclegan": dict(ngf=8, n_blocks=9, antialias=False, antialias_up=False),
    "cyclegan_dropout": dict(ngf=8, n_blocks=6, antialias=False, antialias_up=False, dropout=True),
}


def psr_args(arch):
    return {
        "input_channels": arch.get("in_ch", 3),
        "output_channels": arch.get("out_ch", 3),
        "filters": arch["ngf"],
        "num_blocks": arch["n_blocks"],
        "antialias": arch["antialias"],
        "antialias_up": arch["antialias_up"],
    }


# === Conversion ===


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_converted_generator_matches_pytorch(name, tmp_path):
    arch = ARCHITECTURES[name]
    net = make_torch_generator(**arch)
    path = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), path)
    state_dict = load_torch_state_dict(path)
    assert infer_resnet_generator_args(state_dict) == psr_args(arch)
    generator = ResnetGenerator(**infer_resnet_generator_args(state_dict))
    convert_resnet_generator(state_dict, generator)
    for height, width in [(64, 64), (37, 50)]:
        assert max_error(net, generator, height, width) <= 1e-4, (height, width)


def test_other_channels_and_filters():
    arch = dict(ngf=4, n_blocks=2, antialias=True, antialias_up=False, in_ch=1, out_ch=2)
    net = make_torch_generator(**arch)
    generator = generator_from_torch_state_dict(state_dict_of(net), expected_args={"filters": 4, "num_blocks": 2})
    assert generator.get_config()["input_channels"] == 1 and generator.output_channels == 2
    assert max_error(net, generator, 32, 44, channels=1) <= 1e-4


def test_module_prefix_and_old_instance_norm_statistics_are_accepted(tmp_path):
    net = make_torch_generator(**ARCHITECTURES["cyclegan"])
    state = dict(net.state_dict())
    # PyTorch < 0.4 saved running statistics for InstanceNorm (CycleGAN's pretrained files).
    for key in ("model.2", "model.8", "model.10.conv_block.2", "model.18.conv_block.6"):
        state[f"{key}.running_mean"] = torch.zeros(3)
        state[f"{key}.running_var"] = torch.ones(3)
    path = tmp_path / "dataparallel.pth"
    torch.save({f"module.{key}": value for key, value in state.items()}, path)
    generator = generator_from_torch_state_dict(load_torch_state_dict(path))
    assert max_error(net, generator, 32, 32) <= 1e-4


# === Error paths ===


@pytest.fixture
def cut_state():
    return state_dict_of(make_torch_generator(ngf=4, n_blocks=2, antialias=True, antialias_up=True))


def small_cut_generator(**overrides):
    args = dict(filters=4, num_blocks=2, antialias=True, antialias_up=True)
    args.update(overrides)
    return ResnetGenerator(**args)


def test_extra_keys_are_refused_and_nothing_is_assigned(cut_state):
    cut_state["model.40.weight"] = np.zeros((3, 3, 1, 1), "float32")
    generator = small_cut_generator()
    before = [np.asarray(w).copy() for w in generator.weights]
    with pytest.raises(CheckpointError, match=r"unexpected keys: model\.40\.weight") as error:
        convert_resnet_generator(cut_state, generator)
    assert "missing" not in str(error.value) and "\n" not in str(error.value)
    for old, weight in zip(before, generator.weights):
        np.testing.assert_array_equal(old, np.asarray(weight))


def test_missing_keys_are_refused(cut_state):
    del cut_state["model.13.conv_block.5.bias"]
    del cut_state["model.7.filt"]
    with pytest.raises(CheckpointError, match=r"missing keys: model\.7\.filt, model\.13\.conv_block\.5\.bias"):
        convert_resnet_generator(cut_state, small_cut_generator())


def test_wrong_architecture_lists_misshaped_keys_and_what_the_checkpoint_is(cut_state):
    with pytest.raises(CheckpointError) as error:
        convert_resnet_generator(cut_state, small_cut_generator(filters=8))
    message = str(error.value)
    assert "mis-shaped keys: model.1.bias (4,) (expected (8,))" in message
    assert "filters=8" in message and "it looks like filters=4, num_blocks=2" in message


def test_cut_checkpoint_into_cyclegan_layout_is_refused(cut_state):
    with pytest.raises(CheckpointError, match=r"missing keys: .*unexpected keys: "):
        convert_resnet_generator(cut_state, small_cut_generator(antialias=False, antialias_up=False))


def test_spec_mismatch_is_refused(cut_state):
    with pytest.raises(CheckpointError, match="the checkpoint has num_blocks=2 but the spec says num_blocks=9"):
        generator_from_torch_state_dict(cut_state, expected_args={"num_blocks": 9})


def test_not_a_resnet_generator_is_refused():
    discriminator_like = {"model.0.weight": np.zeros((64, 3, 4, 4), "float32"), "model.0.bias": np.zeros(64)}
    with pytest.raises(CheckpointError, match="not a CUT/CycleGAN ResNet generator: no 7x7 conv"):
        infer_resnet_generator_args(discriminator_like)


def test_blur_buffer_with_other_filter_is_refused(cut_state):
    cut_state["model.11.filt"] = np.full_like(cut_state["model.11.filt"], 1.0 / 9.0)
    with pytest.raises(CheckpointError, match=r"blur buffer model\.11\.filt does not hold CUT's fixed 3-tap filter"):
        convert_resnet_generator(cut_state, small_cut_generator())


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save(make_torch_generator(ngf=4, n_blocks=1, antialias=True, antialias_up=True).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read PyTorch checkpoint .*latest_net_G\.pth.* truncated"):
        load_torch_state_dict(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="PyTorch checkpoint not found: .*nothere.pth"):
        load_torch_state_dict(tmp_path / "nothere.pth")


def test_whole_model_or_nested_dict_is_refused(tmp_path):
    path = tmp_path / "training_state.pth"
    torch.save({"epoch": 3, "state_dict": {"model.1.weight": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="is not a plain state dict .* dict with keys epoch, state_dict"):
        load_torch_state_dict(path)


# === `main.py import-torch` ===


def test_import_torch_command_writes_a_servable_run(tmp_path, capsys):
    import tensorflow as tf
    import yaml

    from psr.cli import main

    net = make_torch_generator(ngf=4, n_blocks=2, antialias=True, antialias_up=True)
    checkpoint = tmp_path / "best_net_G.pth"
    torch.save(net.state_dict(), checkpoint)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "imported", "model": {"generator": {"filters": 4, "num_blocks": 9}}}))

    # The spec says 9 blocks, the checkpoint has 2: refused with the fix.
    assert main(["import-torch", str(checkpoint), "--spec", str(spec), "-o", str(tmp_path / "bad")]) == 2
    message = capsys.readouterr().err
    assert "the checkpoint has num_blocks=2 but the spec says num_blocks=9" in message
    assert "--infer-architecture" in message

    out = tmp_path / "run"
    argv = ["import-torch", str(checkpoint), "--spec", str(spec), "-o", str(out), "--export", "--infer-architecture"]
    assert main(argv) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["generator"]["num_blocks"] == 2
    x = np.random.default_rng(3).uniform(-1, 1, (1, 24, 28, 3)).astype("float32")
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    served = tf.saved_model.load(str(out / "export")).signatures["serving_default"](images=tf.constant(x))["images"]
    assert np.abs(served.numpy() - expected).max() <= 1e-4
    # The run directory works like a trained one; a second import into it is refused.
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((10, 14, 3), 128, np.uint8)).save(tmp_path / "images" / "grey.png")
    assert main(["translate", str(out), str(tmp_path / "images"), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "grey.png")).shape == (10, 14, 3)
    assert main(argv) == 2
    assert "is not empty" in capsys.readouterr().err


def test_import_torch_on_a_full_disk_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    import errno
    import os

    import yaml

    from psr.cli import main

    net = make_torch_generator(ngf=4, n_blocks=1, antialias=True, antialias_up=True)
    checkpoint = tmp_path / "net_G.pth"
    torch.save(net.state_dict(), checkpoint)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": {"generator": {"filters": 4, "num_blocks": 1}}}))
    real_fsync = os.fsync
    calls = {"n": 0}

    def fills_up(fd):
        calls["n"] += 1
        if calls["n"] == 3:  # after the marker and config.yaml, inside the staged run directory
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fills_up)
    out = tmp_path / "run"
    assert main(["import-torch", str(checkpoint), "--spec", str(spec), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: {out} cannot be written: no space left on the device; free some space or choose another disk.\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["net_G.pth", "spec.yaml"]  # no run, no staging folder
