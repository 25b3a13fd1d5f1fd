"""`read_torch_state_dict` against `torch.load` on real files of both torch layouts."""

import os

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.torch_weights import read_torch_state_dict

torch = pytest.importorskip("torch")


def sample_state_dict():
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 2))
    state = model.state_dict()  # includes the int64 num_batches_tracked scalar
    wide = torch.randn(4, 6, generator=generator)
    state["strided_view"] = wide[:, 1::2]  # shares a storage with an offset and strides
    state["wide"] = wide
    state["half"] = torch.randn(3, generator=generator).half()
    state["bfloat16"] = torch.randn(2, 2, generator=generator).bfloat16()
    state["flags"] = torch.tensor([True, False])
    state["empty"] = torch.zeros(0, 3)
    return state


def as_numpy(tensor):
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_matches_torch_load(tmp_path, zip_format):
    path = tmp_path / "weights.pth"
    torch.save(sample_state_dict(), path, _use_new_zipfile_serialization=zip_format)
    expected = torch.load(path, map_location="cpu", weights_only=True)
    arrays = read_torch_state_dict(path)
    assert list(arrays) == list(expected)
    for key, tensor in expected.items():
        reference = as_numpy(tensor)
        assert arrays[key].dtype == reference.dtype and arrays[key].shape == reference.shape, key
        np.testing.assert_array_equal(arrays[key], reference, err_msg=key)
    assert arrays["strided_view"].flags.c_contiguous


def test_reads_without_torch_importable(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "weights.pth"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    np.testing.assert_array_equal(read_torch_state_dict(path)["w"], np.arange(6.0, dtype=np.float32).reshape(2, 3))


def test_broken_or_missing_files_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_torch_state_dict(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError) as caught:
        read_torch_state_dict(garbage)
    assert "\n" not in str(caught.value) and "garbage.pth" in str(caught.value)
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, truncated, _use_new_zipfile_serialization=False)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        read_torch_state_dict(truncated)


def test_pickled_objects_other_than_tensors_are_refused(tmp_path):
    # A whole module (not a state dict) needs arbitrary classes: the restricted reader
    # refuses it and torch.load(weights_only=True) does too.
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError):
        read_torch_state_dict(path)
