"""The README's benchmark commands run and print what they promise (tiny sizes; timings are not checked)."""

import importlib.util
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


def check_timings(result: dict, size: int, batch: int = 1) -> None:
    assert result["size"] == size and result["batch"] == batch and result["steps"] == 1
    assert 0 < result["min_s_per_step"] <= result["median_s_per_step"]
    assert result["peak_rss_mb"] >= result["rss_after_build_mb"] > 0


@pytest.mark.slow
def test_train_step_benchmark_reports_time_and_memory():
    result = run_bench("train_step.py", "--size", "32", "--steps", "1")
    check_timings(result, 32)
    # fused: auto = fused units in float32 unless oneDNN runs (psr.models.fused.fused_units_pay).
    assert result["fused_setting"] == "auto" and result["fused"] is (not result["onednn_enabled"])
    assert result["jit_compile"] is False and result["mixed_precision"] is False
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


# Both multimodal iterations (issue #13) at a tiny size and width; the widths are the only change from
# the paper's networks, so these run the same code paths as the measured settings.
MULTIMODAL_TINY = ("--size", "32", "--steps", "1", "--batch", "2", "--filters", "8")
MULTIMODAL_TERMS = {f"{net}/{mode}_{term}" for mode in ("latent", "ref")
                    for net, terms in (("D", ("real", "fake", "reg")), ("G", ("adv", "sty", "ds", "cyc", "src", "patch")))
                    for term in terms}


@pytest.mark.slow
def test_multimodal_step_benchmark_reports_time_and_memory():
    result = run_bench("multimodal_step.py", *MULTIMODAL_TINY)
    check_timings(result, 32, batch=2)
    assert result["framework"] == "psr" and result["filters"] == 8 and result["num_domains"] == 4
    assert result["malloc_arenas"] == 1 and result["jit_compile"] is False and result["threads"] == 0
    losses = result["mean_losses"]
    assert MULTIMODAL_TERMS <= set(losses) and all(math.isfinite(value) for value in losses.values())
    assert losses["lambda_ds"] == 2.0  # seasons.yaml's λ_ds (the schedule callbacks do not run in the bench)


@pytest.mark.slow
def test_torch_multimodal_benchmark_runs_the_official_iteration():
    pytest.importorskip("torch")
    result = run_bench("torch_multimodal_step.py", *MULTIMODAL_TINY, "--threads", "1")
    check_timings(result, 32, batch=2)
    assert result["framework"] == "pytorch" and result["threads"] == 1 and result["filters"] == 8
    losses = result["last_losses"]
    assert MULTIMODAL_TERMS <= set(losses) and all(math.isfinite(value) for value in losses.values())
    # R1 (a squared norm) and the JSD of SRC cannot be negative.
    assert all(losses[f"D/{mode}_reg"] >= 0 for mode in ("latent", "ref"))
    assert all(losses[f"G/{mode}_src"] >= 0 for mode in ("latent", "ref"))


# The compression latency benchmark (issue #14) at a tiny size: the smallest student and the teacher.
SMALLEST = "16_16_16_16_16_16_16_16"


@pytest.mark.slow
def test_compression_latency_benchmark_reports_latency_throughput_and_ratio(tmp_path):
    torch_installed = importlib.util.find_spec("torch") is not None
    out = tmp_path / "latency.json"
    result = run_bench("compression_latency.py", "--size", "32", "--repeats", "2", "--warmup", "1", "--batch", "1",
                       "--batch", "2", "--config", SMALLEST, "--threads", "1", "--torch", "--json", str(out))
    assert json.loads(out.read_text()) == result  # the file holds what stdout printed
    assert (result["size"], result["batches"], result["repeats"], result["threads"]) == (32, [1, 2], 2, 1)
    from psr.models.profile import mobile_resnet_profile, parse_channel_config, resnet_generator_profile

    models = {row["model"]: row for row in result["models"]}
    assert set(models) == {"teacher", SMALLEST}
    for name, profile in (("teacher", resnet_generator_profile(image_size=32)),
                          (SMALLEST, mobile_resnet_profile(parse_channel_config(SMALLEST), image_size=32))):
        assert (models[name]["macs"], models[name]["params"]) == (profile.macs, profile.params)
        # The served graph runs the Keras model's ops: only float32 summation order may differ (|output| <= 1).
        assert models[name]["export_max_abs_diff"] <= 1e-5
    frameworks = {"tensorflow", "pytorch"} if torch_installed else {"tensorflow"}
    rows = {(row["framework"], row["model"], row["batch"]): row for row in result["results"]}
    assert set(rows) == {(f, m, b) for f in frameworks for m in models for b in (1, 2)}
    for (framework, model, batch), row in rows.items():
        assert row["samples"] == 2 and 0 < row["p50_ms"] <= row["p95_ms"]
        assert row["p50_ms_per_image"] == pytest.approx(row["p50_ms"] / batch, abs=1e-3)
        assert row["images_per_s"] == pytest.approx(1000 * batch / row["p50_ms"], rel=1e-3)
        teacher = rows[(framework, "teacher", batch)]
        assert row["ratio_teacher_to_model"] == pytest.approx(teacher["p50_ms"] / row["p50_ms"], rel=1e-3)
    assert rows[("tensorflow", "teacher", 1)]["ratio_teacher_to_model"] == 1.0


def test_compression_latency_benchmark_refuses_a_bad_config():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compression_latency.py"), "--config", "16_16", "--size", "32"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert completed.returncode != 0 and completed.stdout == ""
    message = completed.stderr.strip().splitlines()[-1]
    assert message.startswith("--config:") and "16_16_32_16_16_64_16_24" in message  # names the fix


@pytest.mark.slow
def test_serving_benchmark_times_both_signatures_and_pytorch(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "serving.json"
    result = run_bench("serving.py", "--size", "32", "--batch", "1", "--batch", "2", "--repeats", "2",
                       "--filters", "4", "--threads", "1", "--json", str(out))
    assert json.loads(out.read_text()) == result
    assert [(row["size"], row["batch"]) for row in result["rows"]] == [(32, 1), (32, 2)]
    for row in result["rows"]:
        for name in ("serving_default", "translate_bytes", "pytorch_eager"):
            timing = row[name]
            assert timing["samples"] == 2 and 0 < timing["p50_ms"] <= timing["p95_ms"]
            assert timing["p50_ms_per_image"] == pytest.approx(timing["p50_ms"] / row["batch"], rel=1e-3)
        assert row["serving_default_vs_pytorch"] == pytest.approx(
            row["serving_default"]["p50_ms"] / row["pytorch_eager"]["p50_ms"], rel=1e-2, abs=1e-3)  # 3 decimals


@pytest.mark.parametrize("args, message", [
    (("--amp-dtype", "float16", "--mixed-precision"), "--amp-dtype float16 is for --device cuda"),
    (("--device", "cuda"), "PyTorch sees no CUDA device"),
])
def test_torch_reference_benchmark_refuses_what_this_machine_cannot_run(args, message):
    torch = pytest.importorskip("torch")
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / "torch_reference_step.py"), *args],
                               capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 2 and message in completed.stderr and "Traceback" not in completed.stderr
