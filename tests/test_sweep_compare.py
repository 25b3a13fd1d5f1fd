"""`main.py sweep` and `main.py compare` on a 2 × 2 grid of tiny runs × 2 seeds (issue #15 items 5–6)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from psr.cli import main
from psr.errors import ConfigError
from psr.sweep import plan_sweep, run_sweep, split_values

from e2e_helpers import TinyExtractor, tiny_raw, write_yaml

pytestmark = pytest.mark.slow

GRID = ["loss.contrastive=dce,hdce", "loss.curriculum.start=10,50"]


def tiny_spec(folder: Path) -> Path:
    raw = tiny_raw(folder, train={"epochs": 1, "decay_epochs": 1, "steps_per_epoch": 1},
                   export={"after_training": False})
    raw["model"]["discriminator"]["num_layers"] = 1
    raw["model"]["head"]["layers"] = [0, 4]
    return write_yaml(folder / "tiny.yaml", raw)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The sweep, trained once for the module as two `main.py run` processes at a time; every run then
    evaluated (its eval.json) with the test's feature extractor."""
    from psr.evaluation import evaluate_model

    folder = tmp_path_factory.mktemp("sweep")
    spec = tiny_spec(folder)
    grid = [arg for key in GRID for arg in ("--grid", key)]
    assert main(["sweep", str(spec), *grid, "--seeds", "2", "--out", str(folder / "sweep"), "--parallel", "2",
                 "--quiet"]) == 0
    plan = plan_sweep(spec, GRID, seeds=2)
    runs = [folder / "sweep" / "runs" / run.name for run in plan.runs]
    for run in runs:
        evaluate_model(run, metrics=["fid"], extractor=TinyExtractor(), image_size=16, progress=False)
    return {"folder": folder, "spec": spec, "plan": plan, "runs": runs}


def test_plan_names_types_and_refusals(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    plan = plan_sweep(spec, GRID, seeds=2)
    assert [run.name for run in plan.runs[:3]] == [
        "contrastive=dce,curriculum.start=10,seed=0", "contrastive=dce,curriculum.start=10,seed=1",
        "contrastive=dce,curriculum.start=50,seed=0",
    ]
    assert len(plan.runs) == 8 and len({run.name for run in plan.runs}) == 8
    assert plan.runs[-1].overrides() == ["loss.contrastive=hdce", "loss.curriculum.start=50", "train.seed=1"]
    assert split_values("1,[0, 4],'a,b', x") == ["1", "[0, 4]", "'a,b'", "x"]
    # Unsafe characters in a value never reach the folder name.
    assert plan_sweep(spec, ["model.head.layers=[0, 4],[0, 8]"]).runs[1].name == "head.layers=0_8"

    out = tmp_path / "never"
    cases = [
        (["--grid", "loss.contrastiv=dce,hdce"], "loss.contrastiv"),  # unknown key
        (["--grid", "loss.contrastive=dce,nope"], "--grid loss.contrastive=nope"),  # bad value
        (["--grid", "train.batch_size=2,two"], "--grid train.batch_size=two"),  # wrong type
        (["--grid", "log.run_dir=a,b"], "--out"),
        (["--grid", "train.seed=1,2", "--seeds", "2"], "--seeds"),
        (["--grid", "loss.contrastive=dce,,hdce"], "empty"),
        ([], "--grid"),
    ]
    for extra, expected in cases:
        assert main(["sweep", str(spec), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
        assert not out.exists()  # refused before anything ran or was written


def test_compare_table_plots_and_grid(sweep, capsys):
    runs = sweep["runs"]
    report = sweep["folder"] / "report"
    assert main(["compare", str(sweep["folder"] / "sweep"), "-o", str(report)]) == 0
    assert "Report:" in capsys.readouterr().out
    assert {"table.md", "table.csv", "grid.png", "plots"} <= set(os.listdir(report))

    # The table's numbers are the runs' own records: final = eval.json, best = min over eval.jsonl.
    with open(report / "table.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 4
    by_label = {(row["loss.contrastive"], row["loss.curriculum.start"]): row for row in rows}
    assert set(by_label) == {(c, s) for c in ("dce", "hdce") for s in ("10.0", "50.0")}
    for (contrastive, start), row in by_label.items():
        members = [run for run in runs if f"contrastive={contrastive}," in run.name
                   and f"start={int(float(start))}," in run.name]
        assert len(members) == 2 and row["seeds"] == "0,1"
        finals = [json.loads((run / "eval.json").read_text())["fid"] for run in members]
        bests = [min(json.loads(line)["fid"] for line in (run / "eval.jsonl").read_text().splitlines())
                 for run in members]  # one evaluation each here; test_final_and_best has several
        np.testing.assert_allclose(float(row["fid_final_mean"]), np.mean(finals), rtol=1e-12)
        np.testing.assert_allclose(float(row["fid_final_std"]), np.std(finals, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(float(row["fid_best_mean"]), np.mean(bests), rtol=1e-12)
        scores = [json.loads((run / "content_scores.json").read_text())["translation"]["psnr"] for run in members]
        np.testing.assert_allclose(float(row["psnr_final_mean"]), np.mean(scores), rtol=1e-12)
    markdown = (report / "table.md").read_text()
    assert "| contrastive | curriculum.start | seeds | fid (final) | fid (best) |" in markdown
    assert markdown.count("\n| dce |") == 2 and " ± " in markdown

    plots = set(os.listdir(report / "plots"))
    assert {"train_g_loss.png", "train_d_loss.png", "train_Gamma.png"} <= plots
    with Image.open(report / "plots" / "train_Gamma.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    # Γ differs between the start=10 and start=50 rows: at least two line colours are drawn.
    from psr.plotting import PALETTE

    drawn = {colour for colour in PALETTE[:4] if (pixels == colour).all(axis=-1).any()}
    assert len(drawn) >= 2

    # The grid: an input row and one row per run; a run's tile is its translation of the first test image.
    from psr.data.images import read_image
    from psr.data.pixels import to_uint8, to_unit_range
    from psr.inference import load_translator

    grid = np.asarray(Image.open(report / "grid.png").convert("RGB"))
    cell, gap = 96, 4
    assert grid.shape[0] == (1 + len(runs)) * (cell + gap) + gap
    first = sorted((sweep["folder"] / "shapes" / "testA").iterdir())[0]
    expected = to_uint8(load_translator(runs[2])(to_unit_range(read_image(first))[None])[0])
    scaled = np.asarray(Image.fromarray(expected).resize((cell, cell), Image.NEAREST))
    x0 = grid.shape[1] - gap - 4 * (cell + gap)  # the first of the 4 image columns
    y0 = gap + 3 * (cell + gap)  # row 0 is the input, then the runs in plan order
    np.testing.assert_array_equal(grid[y0:y0 + cell, x0:x0 + cell], scaled)


def test_rerun_skips_finished_and_resumes_unfinished(sweep):
    folder, plan = sweep["folder"], sweep["plan"]
    stamps = {run: (run / "config.yaml").stat().st_mtime_ns for run in sweep["runs"]}
    lines = []
    run_sweep(plan, folder / "sweep", report=lines.append)
    assert len(lines) == 8 and all(line.endswith("finished before, skipped") for line in lines)
    assert all((run / "config.yaml").stat().st_mtime_ns == stamp for run, stamp in stamps.items())

    # A run whose final outputs are missing is unfinished: psr's resume writes only what is missing.
    target = sweep["runs"][5]
    (target / "content_scores.json").unlink()
    lines.clear()
    run_sweep(plan, folder / "sweep", report=lines.append)
    assert [line for line in lines if "training" in line] == [f"[6/8] {target.name}: training"]
    assert (target / "content_scores.json").is_file()

    stored = json.loads((folder / "sweep" / "sweep.json").read_text())
    assert [run["name"] for run in stored["runs"]] == [run.name for run in plan.runs]
    assert stored["runs"][7]["settings"] == {"loss.contrastive": "hdce", "loss.curriculum.start": "50"}
    # Another grid in the same folder is refused before anything runs.
    with pytest.raises(ConfigError, match="another plan"):
        run_sweep(plan_sweep(sweep["spec"], GRID[:1], seeds=2), folder / "sweep")


def test_output_and_input_safety(sweep, tmp_path, capsys):
    source = sweep["folder"] / "sweep"
    run = sweep["runs"][0]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    cases = [
        (["compare", str(source), "-o", str(source / "report")], "lies inside the input"),
        (["compare", str(run), "-o", str(run)], "is the input"),
        (["compare", str(run), "-o", str(sweep["runs"][1])], "run directory"),
        (["compare", str(run), "-o", str(foreign)], "psr did not write"),
        (["compare", str(foreign), "-o", str(tmp_path / "r")], "neither a psr run"),
        (["sweep", str(sweep["spec"]), "--grid", GRID[0], "--out", str(foreign)], "not a psr sweep"),
        (["sweep", str(sweep["spec"]), "--grid", GRID[0], "--out", str(run)], "run directory"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    assert os.listdir(foreign) == ["notes.txt"] and not (source / "report").exists()

    # A report folder psr wrote is replaced by the next report (here: two single runs, no grid).
    out = tmp_path / "report"
    assert main(["compare", str(run), "-o", str(out), "--grid-images", "0"]) == 0
    assert main(["compare", str(run), str(sweep["runs"][2]), "-o", str(out), "--grid-images", "0"]) == 0
    assert not (out / "grid.png").exists()
    with open(out / "table.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["loss.curriculum.start"] for row in rows] == ["10.0", "50.0"]


def fake_run(path: Path, contrastive: str, seed: int, fids: list, latest_fid: float, g_loss: list) -> Path:
    """A run directory holding only what compare reads: config, evaluation records, TensorBoard scalars."""
    import tensorflow as tf

    from psr.config import dump_config
    from psr.rundir import RunDir, atomic_write_json, atomic_write_text

    from e2e_helpers import tiny_config

    cfg = tiny_config(path.parent, loss={"contrastive": contrastive}, train={"seed": seed},
                      log={"run_dir": str(path)})
    run = RunDir(path).claim()
    atomic_write_text(run.config, dump_config(cfg))
    with open(run.eval_jsonl, "w") as stream:
        for epoch, fid in enumerate(fids, 1):
            stream.write(json.dumps({"epoch": epoch, "features": "x", "fid": fid, "kid": fid / 10, "kid_std": 0.5}) + "\n")
        stream.write('{"epoch": 9, "fid": 0.0')  # a line cut short by a kill: left out
    atomic_write_json(run.eval_json, {"checkpoint": "latest", "epoch": len(fids), "num_images": 4, "fid": latest_fid})
    writer = tf.summary.create_file_writer(str(run.tensorboard_train))
    with writer.as_default():
        for epoch, value in enumerate(g_loss, 1):
            tf.summary.scalar("epoch/g_loss", value, step=epoch)
    writer.close()
    return path


def test_final_and_best_against_hand_computed_values(tmp_path):
    from psr.compare import compare, summarize_run

    runs = [
        fake_run(tmp_path / "a0", "dce", 0, [5.0, 3.0, 4.0], 4.5, [2.0, 1.0]),
        fake_run(tmp_path / "a1", "dce", 1, [6.0, 7.0], 8.0, [3.0, 2.0, 1.5]),
        fake_run(tmp_path / "b0", "hdce", 0, [1.0, 2.0], 2.5, [1.0]),
    ]
    summary = summarize_run(runs[0])
    assert summary.final == {"fid": 4.5, "kid": 0.4}  # eval.json's fid; kid from the last record; no *_std
    assert summary.best == {"fid": 3.0, "kid": 0.3}
    assert summary.metric_curves["fid"] == [(1, 5.0), (2, 3.0), (3, 4.0)]
    assert summary.train_curves["g_loss"] == [(1, 2.0), (2, 1.0)]

    out = compare(runs, tmp_path / "report", grid_images=0, report=lambda line: None)
    with open(out / "table.csv", newline="") as stream:
        rows = {row["loss.contrastive"]: row for row in csv.DictReader(stream)}
    dce, hdce = rows["dce"], rows["hdce"]
    assert dce["seeds"] == "0,1" and dce["runs"] == "a0 a1"
    assert float(dce["fid_final_mean"]) == 6.25 and float(dce["fid_final_std"]) == pytest.approx(2.474873734, rel=1e-9)
    assert float(dce["fid_best_mean"]) == 4.5 and float(dce["fid_best_std"]) == pytest.approx(2.121320344, rel=1e-9)
    assert float(hdce["fid_final_mean"]) == 2.5 and hdce["fid_final_std"] == "" and hdce["fid_best_mean"] == "1.0"
    assert "| hdce | 0 | 2.5 | 1 |" in (out / "table.md").read_text()
    assert {"metric_fid.png", "metric_kid.png", "train_g_loss.png"} == set(os.listdir(out / "plots"))


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_failed_runs_do_not_stop_the_others_and_are_named(tmp_path, capsys, parallel):
    raw = tiny_raw(tmp_path)
    raw["data"].pop("synthetic")  # a dataset folder that does not exist: each run fails at its start
    spec = write_yaml(tmp_path / "missing.yaml", raw)
    out = tmp_path / "sweep"
    grid = f"data.root={tmp_path / 'nowhere1'},{tmp_path / 'nowhere2'}"
    assert main(["sweep", str(spec), "--grid", grid, "--out", str(out), "--parallel", parallel, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 2 of 2 sweep runs failed (root=") and "rerun the same command" in err[-1]
    failures = [line for line in err if ": failed" in line]
    assert len(failures) == 2 and all("nowhere" in line for line in failures), failures  # the runs' own errors
    if parallel == "2":
        assert len(os.listdir(out / "logs")) == 2
