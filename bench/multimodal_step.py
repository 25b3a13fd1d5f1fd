"""Seconds per iteration and peak memory of psr's StarGAN v2 + hDCE/SRC trainer (issue #13 benchmark).

    python bench/multimodal_step.py --size 64 --steps 5                  # psr, one JSON line
    python bench/torch_multimodal_step.py --size 64 --steps 5            # the official iteration (PyTorch)
    python bench/multimodal_step.py --size 64 --steps 5 --interleave 3   # both, alternately, 3 rounds each

One iteration is what `psr.trainers.stargan2.StarGAN2Trainer.train_step` does: two D updates (latent,
reference; R1 on the reals), the latent G update (G, M, E, projection head) and the reference G update
(G alone), then the EMA of G, M and E. The networks are the paper's (experiments/seasons.yaml: 4 domains,
style 64, latent 16, mapping width 512, 4 + 4 bottleneck blocks, 5 feature layers × 128 patches) with the
paper's widths (`--filters 64`, what the official width rule 2^14 / side gives at side 256); the image side
is `--size` (256 is the paper's, too slow for a 2-core CPU). The official rule would widen the networks as
the side shrinks (256 channels at side 64), which would measure a different network, so both scripts pin
the width. Random images and labels stand in for data (the data pipeline is not timed).

Peak memory is the process's peak resident set size (ru_maxrss), which includes TensorFlow itself, measured
in a fresh process. Like `main.py`, the script caps glibc's malloc arenas before TensorFlow loads.

`--interleave N` runs this script and bench/torch_multimodal_step.py alternately N times each, every run in
a fresh process (the machine's speed drifts by about ±10 % over minutes, so alternating spreads the drift
over both), and prints one JSON line with every run, both medians of the per-run medians and their ratio.
On a loaded machine (other jobs on the same cores) PyTorch's OpenMP pool slows down erratically (one 2-thread
run took 6x as long as another); `--threads 1` pins both frameworks to one thread and gives steadier figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psr  # noqa: E402,F401

NUM_DOMAINS = 4  # experiments/seasons.yaml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side, a power of two (the paper's is 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed iterations after one warm-up iteration")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (the paper's is 8)")
    parser.add_argument("--filters", type=int, default=64,
                        help="width after the first conv of G, E and D (64 = the paper's networks)")
    parser.add_argument("--jit", action="store_true", help="compile the iteration with XLA")
    parser.add_argument("--malloc-arenas", type=int, default=None,
                        help="glibc malloc arena cap, as `main.py run` applies it (default: $PSR_MALLOC_ARENAS or 1; "
                             "0 = glibc's default)")
    parser.add_argument("--interleave", type=int, default=0, metavar="N",
                        help="run psr and the PyTorch re-statement alternately N times each in fresh processes "
                             "and print both medians and their ratio")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op and inter-op threads (0 = TensorFlow default); with --interleave "
                             "also the PyTorch script's --threads")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    from psr.runtime import configure_host_memory

    arenas = configure_host_memory(args.malloc_arenas)  # before TensorFlow starts its threads, as main.py does

    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from psr.builders import build_stargan2_trainer
    from psr.config import load_experiment
    from psr.methods import TrainerInputs

    overrides = [f"data.crop_size={args.size}", f"data.load_size={args.size}", f"train.batch_size={args.batch}",
                 f"train.jit_compile={str(args.jit).lower()}", f"model.num_domains={NUM_DOMAINS}"]
    overrides += [f"model.{net}.filters={args.filters}" for net in ("generator", "style_encoder", "discriminator")]
    cfg = load_experiment(ROOT / "experiments" / "seasons.yaml", overrides)
    trainer = build_stargan2_trainer(cfg.model, cfg.loss, cfg.train,
                                     TrainerInputs(image_size=args.size, steps_per_epoch=cfg.train.steps_per_epoch,
                                                   seed=0))
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(1)
    images = [tf.constant(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)), tf.float32) for _ in range(3)]
    y_org = tf.constant(np.arange(args.batch) % NUM_DOMAINS, tf.int32)
    y_trg = tf.constant((np.arange(args.batch) + 1) % NUM_DOMAINS, tf.int32)
    data = ((images[0], y_org), (images[1], images[2], y_trg))
    step = tf.function(trainer.train_step, jit_compile=args.jit)

    start = time.perf_counter()
    logs = step(data)
    float(logs["G/ref_adv"])  # forces the iteration to finish
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        logs = step(data)
        float(logs["G/ref_adv"])
        times.append(time.perf_counter() - start)
    # The trainer reports running means over the iterations; they must be finite after the last one.
    losses = {name: float(np.asarray(value).reshape(-1)[0]) for name, value in logs.items()}
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise SystemExit(f"non-finite losses after the last iteration: {', '.join(bad)}")
    times.sort()
    return {
        "framework": "psr", "tensorflow_version": tf.__version__,
        "size": args.size, "batch": args.batch, "steps": args.steps, "filters": args.filters,
        "num_domains": NUM_DOMAINS, "jit_compile": args.jit, "threads": args.threads,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"), "malloc_arenas": arenas,
        "first_step_s": round(first, 2),
        "median_s_per_step": round(times[len(times) // 2], 3) if times else None,
        "min_s_per_step": round(times[0], 3) if times else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_build_mb": round(rss_built),
        "mean_losses": {name: round(value, 5) for name, value in losses.items()},
    }


def run_script(script: str, options: list[str]) -> dict:
    """One fresh process of a bench script; its one JSON line."""
    completed = subprocess.run([sys.executable, str(ROOT / "bench" / script), *options],
                               capture_output=True, text=True, cwd=ROOT)
    if completed.returncode != 0:
        raise SystemExit(f"{script} failed (exit {completed.returncode}): {completed.stderr.strip()[-1500:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def interleave(args: argparse.Namespace) -> dict:
    shared = ["--size", str(args.size), "--steps", str(args.steps), "--batch", str(args.batch),
              "--filters", str(args.filters)]
    psr_options = shared + ["--threads", str(args.threads)] + (["--jit"] if args.jit else [])
    if args.malloc_arenas is not None:
        psr_options += ["--malloc-arenas", str(args.malloc_arenas)]
    torch_options = shared + ["--threads", str(args.threads)]
    runs = {"psr": [], "pytorch": []}
    for round_index in range(args.interleave):
        for name, script, options in (("psr", "multimodal_step.py", psr_options),
                                      ("pytorch", "torch_multimodal_step.py", torch_options)):
            runs[name].append(run_script(script, options))
            # Progress on stderr (stdout keeps its one JSON line): long runs can be followed and cut short.
            print(f"round {round_index + 1}/{args.interleave} {name}: {json.dumps(runs[name][-1])}",
                  file=sys.stderr, flush=True)
    medians = {name: statistics.median(run["median_s_per_step"] for run in results)
               for name, results in runs.items()}
    return {
        "size": args.size, "batch": args.batch, "steps": args.steps, "filters": args.filters,
        "rounds": args.interleave, "threads": args.threads,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "psr_median_s_per_step": round(medians["psr"], 3),
        "pytorch_median_s_per_step": round(medians["pytorch"], 3),
        "ratio_psr_to_pytorch": round(medians["psr"] / medians["pytorch"], 3),
        "psr_peak_rss_mb": max(run["peak_rss_mb"] for run in runs["psr"]),
        "pytorch_peak_rss_mb": max(run["peak_rss_mb"] for run in runs["pytorch"]),
        "runs": {name: [{key: run[key] for key in ("median_s_per_step", "min_s_per_step", "first_step_s",
                                                   "peak_rss_mb")} for run in results]
                 for name, results in runs.items()},
    }


def main() -> None:
    args = parse_args()
    if args.size < 16 or args.size & (args.size - 1):
        raise SystemExit(f"--size {args.size}: the discriminator needs a power of two >= 16; pass e.g. --size 64.")
    if args.interleave > 0 and args.steps < 1:
        raise SystemExit(f"--steps {args.steps}: --interleave compares timed iterations; pass --steps 1 or more.")
    print(json.dumps(interleave(args) if args.interleave > 0 else measure(args)))


if __name__ == "__main__":
    main()
