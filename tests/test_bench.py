"""The README's benchmark commands run and print what they promise (tiny sizes; timings are not checked)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1, completed.stdout  # one JSON line, nothing else on stdout
    return json.loads(lines[0])


def check_timings(result: dict, size: int) -> None:
    assert result["size"] == size and result["batch"] == 1 and result["steps"] == 1
    assert 0 < result["min_s_per_step"] <= result["median_s_per_step"]
    assert result["peak_rss_mb"] >= result["rss_after_build_mb"] > 0


@pytest.mark.slow
def test_train_step_benchmark_reports_time_and_memory():
    result = run_bench("train_step.py", "--size", "32", "--steps", "1")
    check_timings(result, 32)
    assert result["fused"] is True and result["jit_compile"] is False
    assert result["malloc_arenas"] == 1  # the same host-memory setting as `main.py run`


@pytest.mark.slow
def test_torch_reference_benchmark_runs_the_official_step():
    pytest.importorskip("torch")
    result = run_bench("torch_reference_step.py", "--size", "32", "--steps", "1", "--threads", "1")
    check_timings(result, 32)
    assert result["framework"] == "pytorch" and result["threads"] == 1
    losses = result["last_losses"]
    assert {"D", "G", "HDCE", "HDCE_Y", "SRC"} <= set(losses)
    assert all(math.isfinite(value) for value in losses.values())
