"""With oneDNN on (the default on Intel AVX-512 machines, forced here), training prints no grappler
`remapper failed` error (issue #16): psr's leaky ReLU is a select, which the remapper does not fuse."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e_helpers import tiny_raw, write_yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fused", [True, False])
def test_no_remapper_failure_with_onednn(tmp_path, fused):
    raw = tiny_raw(tmp_path, train={"epochs": 1, "decay_epochs": 0},
                   model={"generator": {"filters": 4, "num_blocks": 1, "fused": fused},
                          "discriminator": {"filters": 4, "num_layers": 2, "fused": fused}},
                   export={"after_training": False})
    spec = write_yaml(tmp_path / "tiny.yaml", raw)
    out = subprocess.run(
        [sys.executable, str(REPO / "main.py"), "run", str(spec), "--quiet"], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "oneDNN custom operations are on" in out.stderr  # the setting took effect
    assert "remapper failed" not in out.stderr
