"""Seconds per training step and peak memory of the full horse→zebra network (issue #3 benchmark).

    python bench/train_step.py --size 128 --steps 5            # eager-graph (tf.function) step
    python bench/train_step.py --size 256 --steps 3 --jit      # the same step compiled with XLA
    python bench/train_step.py --size 128 --fused false        # plain Keras layers (default: auto, see psr/models/fused.py)
    python bench/train_step.py --size 128 --mixed-precision    # mixed_bfloat16 (train.mixed_precision: true)
    python bench/torch_reference_step.py --size 128 --steps 5  # the official PyTorch step, for comparison

The network is the official one: ResNet generator ngf 64 with 9 blocks, PatchGAN, five NCE layers × 256
patches, identity branch, batch 1, hDCE + SRC. Random images stand in for data (the data pipeline is not
timed). Peak memory is the process's peak resident set size (ru_maxrss), which includes TensorFlow itself
(about 0.5 GB after import), measured in a fresh process per setting. Like `main.py`, the script caps glibc's
malloc arenas before TensorFlow loads (psr/runtime.py; `--malloc-arenas 0` keeps glibc's default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psr  # noqa: E402,F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image side (the official crop is 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--jit", action="store_true", help="compile the step with XLA")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--fused", choices=("auto", "true", "false"), default="auto",
                        help="model.generator.fused and model.discriminator.fused (auto: by device and precision)")
    parser.add_argument("--no-fused", action="store_true", help="the same as --fused false")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="train.mixed_precision: true (mixed_bfloat16; the losses stay float32)")
    parser.add_argument("--intra-op", type=int, default=0, help="intra-op threads (0 = TensorFlow default)")
    parser.add_argument("--inter-op", type=int, default=0, help="inter-op threads (0 = TensorFlow default)")
    parser.add_argument("--malloc-arenas", type=int, default=None,
                        help="glibc malloc arena cap, as `main.py run` applies it (default: $PSR_MALLOC_ARENAS or 1; "
                             "0 = glibc's default)")
    args = parser.parse_args()

    from psr.runtime import configure_host_memory

    arenas = configure_host_memory(args.malloc_arenas)  # before TensorFlow starts its threads, as main.py does

    import tensorflow as tf

    if args.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    from psr.config import load_experiment
    from psr.experiment import build_trainer
    from psr.methods import TrainerInputs, get_method
    from psr.models.fused import onednn_enabled

    fused = "false" if args.no_fused else args.fused
    experiment = Path(__file__).resolve().parents[1] / "experiments" / "horse2zebra.yaml"
    cfg = load_experiment(experiment, [f"train.batch_size={args.batch}", f"data.crop_size={args.size}",
                                       f"data.load_size={args.size}", f"train.jit_compile={str(args.jit).lower()}",
                                       f"model.generator.fused={fused}", f"model.discriminator.fused={fused}",
                                       f"train.mixed_precision={str(args.mixed_precision).lower()}"])
    # As `main.py run` builds it: under the run's dtype policy, in the default strategy's scope.
    trainer = build_trainer(get_method(cfg.method), cfg.model, cfg.loss, cfg.train,
                            TrainerInputs(image_size=args.size, steps_per_epoch=1000, seed=0), tf.distribute.get_strategy())
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    x = tf.random.uniform((args.batch, args.size, args.size, 3), -1, 1, seed=1)
    y = tf.random.uniform((args.batch, args.size, args.size, 3), -1, 1, seed=2)
    step = tf.function(trainer.train_step, jit_compile=args.jit)
    gpus = tf.config.list_logical_devices("GPU")
    start = time.perf_counter()
    float(step((x, y))["g_loss"])
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        float(step((x, y))["g_loss"])  # forces the step to finish
        times.append(time.perf_counter() - start)
    times.sort()
    result = {
        "size": args.size, "batch": args.batch, "jit_compile": args.jit, "fused_setting": fused,
        "fused": bool(trainer.generator.fused), "mixed_precision": args.mixed_precision,
        "steps": args.steps,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"), "onednn_enabled": onednn_enabled(),
        "inter_op": args.inter_op,
        "malloc_arenas": arenas,
        "first_step_s": round(first, 2),
        "median_s_per_step": round(times[len(times) // 2], 3), "min_s_per_step": round(times[0], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_build_mb": round(rss_built),
        "device": "GPU" if gpus else "CPU",
        # On a GPU: the peak of TensorFlow's allocations on the first one (the step's activations live there).
        "peak_device_mb": round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20) if gpus else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
