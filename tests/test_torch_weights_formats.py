"""psr.torch_weights: nested state dicts, DataParallel prefixes, parameters and refused files (LPIPS / DRN weight layouts)."""

import collections
import pickle
import zipfile

import numpy as np
import pytest

from psr.errors import CheckpointError
from psr.torch_weights import read_torch_state_dict


@pytest.fixture(scope="module")
def state():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    shared = torch.randn(10)
    return torch, collections.OrderedDict(
        [("conv.weight", torch.randn(4, 3, 2, 2)), ("transposed", torch.randn(5, 6).t()),
         ("counts", torch.arange(7)), ("scalar", torch.tensor(2.5)), ("slice", shared[2:7]),
         ("half", torch.randn(3).half()), ("double", torch.randn(2, 2).double()), ("flag", torch.tensor([True, False]))]
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_reads_both_formats_exactly(state, tmp_path, legacy):
    torch, tensors = state
    path = tmp_path / "w.pth"
    torch.save({f"module.{k}": v for k, v in tensors.items()}, path, _use_new_zipfile_serialization=not legacy)
    loaded = read_torch_state_dict(path)
    assert list(loaded) == list(tensors)  # file order, DataParallel prefix removed
    for key, tensor in tensors.items():
        assert loaded[key].dtype == tensor.numpy().dtype and loaded[key].shape == tuple(tensor.shape)
        np.testing.assert_array_equal(loaded[key], tensor.numpy())


def test_nested_state_dict_and_parameters(state, tmp_path):
    torch, _ = state
    layer = torch.nn.Linear(3, 2)
    torch.save({"state_dict": layer.state_dict(keep_vars=True), "epoch": 3}, tmp_path / "c.pth")
    loaded = read_torch_state_dict(tmp_path / "c.pth")
    np.testing.assert_array_equal(loaded["weight"], layer.weight.detach().numpy())


def test_refuses_code_missing_and_damaged_files(state, tmp_path):
    torch, tensors = state
    with pytest.raises(CheckpointError, match="not found"):
        read_torch_state_dict(tmp_path / "none.pth")
    # A pickle that would run code is refused, not executed.
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(collections.Counter("ab"), protocol=2))
    with pytest.raises(CheckpointError, match="collections.Counter"):
        read_torch_state_dict(evil)
    good = tmp_path / "good.pth"
    torch.save(tensors, good, _use_new_zipfile_serialization=False)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-20])
    with pytest.raises(CheckpointError, match="truncated") as error:
        read_torch_state_dict(truncated)
    assert "\n" not in str(error.value)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_a_dict)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        read_torch_state_dict(not_a_dict)
