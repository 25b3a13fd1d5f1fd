"""`train.deterministic: true`: two runs of the quickstart (shortened) give bit-identical checkpoints."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run_quickstart(tmp_path: Path, name: str, deterministic: bool) -> Path:
    run_dir = tmp_path / name
    overrides = [
        f"log.run_dir={run_dir}", f"data.root={tmp_path / 'shapes'}", "data.synthetic.num_train=16",
        "train.epochs=1", "train.decay_epochs=1", f"train.deterministic={str(deterministic).lower()}",
        "export.after_training=false", "log.verbose=0",
    ]
    command = [sys.executable, str(REPO / "main.py"), "run", str(REPO / "experiments" / "quickstart.yaml"), "--quiet"]
    for override in overrides:
        command += ["--set", override]
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


def weights(run_dir: Path) -> dict:
    path = next((run_dir / "checkpoints" / "latest").glob("ckpt-00002-*")) / "trainer.weights.h5"
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: found.__setitem__(name, np.array(item)) if isinstance(item, h5py.Dataset) else None)
    return found


def test_two_deterministic_runs_are_bit_identical(tmp_path):
    first = weights(run_quickstart(tmp_path, "a", deterministic=True))
    second = weights(run_quickstart(tmp_path, "b", deterministic=True))
    assert first.keys() == second.keys() and len(first) > 20
    for name in first:
        assert first[name].tobytes() == second[name].tobytes(), name
    # The networks did train (the comparison is not between two untouched initialisations): the first
    # optimiser variable is its step counter.
    assert int(first["g_optimizer/vars/0"]) > 0
