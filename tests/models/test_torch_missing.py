"""The PyTorch importer without PyTorch: a one-line install hint (runs with or without torch)."""

import sys

import pytest

from psr.errors import CheckpointError
from psr.models.torch_import import load_torch_state_dict


def test_missing_pytorch_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(CheckpointError, match=r"^PyTorch is needed to read \.pth files: pip install torch$"):
        load_torch_state_dict(tmp_path / "latest_net_G.pth")
