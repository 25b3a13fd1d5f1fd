"""Inference latency of the exported GAN-compression teacher and students on the CPU (issue #14 benchmark).

    python bench/compression_latency.py --threads 2 --repeats 15 --json latency.json
    python bench/compression_latency.py --config 16_16_32_16_16_64_16_24 --batch 1 --torch

Builds, with random weights, the CycleGAN teacher `resnet_9blocks` (ngf 64, stride-2 convs, transposed convs)
and one `MobileResnetGenerator` per `--config` (default: the 2.962G horse→zebra student
16_16_32_16_16_64_16_24 and the smallest, all-16 student), exports each with `psr.export.export_generator`
into a temporary folder, loads the SavedModel back with `tf.saved_model.load` and times its
`serving_default` signature on random `--size`² images at each `--batch`. Each batch size gets `--warmup`
untimed calls per model, then `--repeats` rounds in which every model runs once, the order rotating from
round to round (the machine's speed drifts by about ±10 % over minutes and other jobs share its cores,
so alternating spreads both over all models). Reported per model and batch: p50 / p95 of the latency per
call and per image, throughput (images/s at the p50 latency) and the ratio teacher p50 / model p50, next
to the exact MACs and parameters of `psr.models.profile` (torchprofile's convention).

`--per-image` exports every model with `export_generator(..., per_image=True)` (the signature loops over
the batch). `--torch` adds the same networks re-stated in PyTorch and run eagerly under `torch.no_grad()` (the
upstream deployment path), timed in the same rounds. The exported outputs are checked against the Keras
models (max |Δ| in the JSON), so a faster graph cannot silently compute something else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psr  # noqa: E402,F401

# The 2.962G horse→zebra student of the GAN Compression paper and the smallest of the search space.
DEFAULT_CONFIGS = ("16_16_32_16_16_64_16_24", "16_16_16_16_16_16_16_16")
TEACHER = "teacher"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image side (256 is the paper's)")
    parser.add_argument("--batch", type=int, action="append", default=None,
                        help="batch size, repeatable (default: 1 and 8)")
    parser.add_argument("--config", action="append", default=None,
                        help=f"student channel configuration c0_..._c7, repeatable (default: {' and '.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per batch size (one call per model each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per model and batch size first")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op and inter-op threads, and PyTorch's threads (0 = their defaults)")
    parser.add_argument("--per-image", action="store_true",
                        help="export with per_image=True: serving_default loops over the batch, one image at a time")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch re-statements of the networks (eager)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the result to OUT")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> list[tuple[int, ...]]:
    """The student configs; bad options end the script with one line naming the fix."""
    from psr.errors import PsrError
    from psr.models.profile import parse_channel_config

    if args.size < 8:
        raise SystemExit(f"--size {args.size}: the networks need a side of at least 8; pass e.g. --size 256.")
    if any(batch < 1 for batch in args.batch):
        raise SystemExit(f"--batch {min(args.batch)}: a batch holds at least one image; pass e.g. --batch 1.")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 0:
        raise SystemExit("--repeats must be >= 1, --warmup and --threads >= 0; pass e.g. --repeats 10 --warmup 2.")
    try:
        configs = [parse_channel_config(text) for text in args.config]
    except PsrError as error:
        raise SystemExit(f"--config: {error}") from None
    return list(dict.fromkeys(configs))  # a config given twice is timed once


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


# === Networks ===


def build_keras_models(configs: list[tuple[int, ...]]) -> dict:
    """name → (Keras generator, profile at 256² is computed later at --size)."""
    from psr.models.mobile_resnet import MobileResnetGenerator
    from psr.models.profile import format_channel_config
    from psr.models.resnet_generator import ResnetGenerator

    models = {TEACHER: ResnetGenerator(filters=64, num_blocks=9, antialias=False, antialias_up=False, name="teacher")}
    for config in configs:
        models[format_channel_config(config)] = MobileResnetGenerator(config)
    return models


def profile_of(name: str, size: int):
    from psr.models.profile import mobile_resnet_profile, parse_channel_config, resnet_generator_profile

    if name == TEACHER:
        return resnet_generator_profile(filters=64, num_blocks=9, image_size=size)
    return mobile_resnet_profile(parse_channel_config(name), image_size=size)


def export_and_load(models: dict, folder: Path, per_image: bool = False) -> dict:
    """name → the `serving_default` signature of the model's exported SavedModel, loaded back."""
    import tensorflow as tf

    from psr.export import SIGNATURE_FLOAT, export_generator

    signatures = {}
    for name, model in models.items():
        path = export_generator(model, folder / name, per_image=per_image)
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures[SIGNATURE_FLOAT]
        signature._psr_keep_alive = loaded  # the signature's variables live as long as the loaded object
        signatures[name] = signature
    return signatures


def torch_models(configs: list[tuple[int, ...]]) -> dict:
    """The same networks in PyTorch (random N(0, 0.02) weights), eval mode."""
    import torch
    from torch import nn

    def norm_relu(channels: int) -> list:
        return [nn.InstanceNorm2d(channels), nn.ReLU(True)]

    def encoder_decoder(stem: int, down1: int, stream: int, blocks: list, up1: int, up2: int) -> nn.Sequential:
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, stem, 7), *norm_relu(stem),
                  nn.Conv2d(stem, down1, 3, 2, 1), *norm_relu(down1),
                  nn.Conv2d(down1, stream, 3, 2, 1), *norm_relu(stream), *blocks,
                  nn.ConvTranspose2d(stream, up1, 3, 2, 1, output_padding=1), *norm_relu(up1),
                  nn.ConvTranspose2d(up1, up2, 3, 2, 1, output_padding=1), *norm_relu(up2),
                  nn.ReflectionPad2d(3), nn.Conv2d(up2, 3, 7), nn.Tanh()]
        return nn.Sequential(*layers)

    class Residual(nn.Module):
        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward(self, x):
            return x + self.body(x)

    def separable(a: int, b: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(a, a, 3, groups=a), nn.InstanceNorm2d(a), nn.Conv2d(a, b, 1))

    def plain_block(channels: int) -> Residual:
        return Residual(nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), *norm_relu(channels),
                                      nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                      nn.InstanceNorm2d(channels)))

    def mobile_block(stream: int, hidden: int) -> Residual:
        return Residual(nn.Sequential(nn.ReflectionPad2d(1), separable(stream, hidden), *norm_relu(hidden),
                                      nn.ReflectionPad2d(1), separable(hidden, stream), nn.InstanceNorm2d(stream)))

    def initialise(net: nn.Module) -> nn.Module:
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)
        return net.eval()

    from psr.models.profile import format_channel_config

    torch.manual_seed(0)
    nets = {TEACHER: initialise(encoder_decoder(64, 128, 256, [plain_block(256) for _ in range(9)], 128, 64))}
    for config in configs:
        c0, c1, c2, c3, c4, c5, c6, c7 = config
        blocks = [mobile_block(4 * c2, 4 * hidden) for hidden in (c3, c4, c5) for _ in range(3)]
        nets[format_channel_config(config)] = initialise(encoder_decoder(c0, 2 * c1, 4 * c2, blocks, 2 * c6, c7))
    return nets


# === Timing ===


def summarise(seconds: list[float], batch: int) -> dict:
    import numpy as np

    p50, p95 = (float(np.percentile(seconds, q)) for q in (50, 95))
    return {
        "p50_ms": round(1000 * p50, 3), "p95_ms": round(1000 * p95, 3),
        "p50_ms_per_image": round(1000 * p50 / batch, 3), "p95_ms_per_image": round(1000 * p95 / batch, 3),
        "images_per_s": round(batch / p50, 3), "samples": len(seconds),
    }


def time_interleaved(runners: dict, batch: int, warmup: int, repeats: int) -> dict:
    """key → latencies (s) of `repeats` calls, one call per runner per round in a rotating order."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    keys = list(runners)
    seconds = {key: [] for key in keys}
    for round_index in range(repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            runners[key]()
            seconds[key].append(time.perf_counter() - start)
    return seconds


def measure(args: argparse.Namespace, configs: list[tuple[int, ...]]) -> dict:
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    torch = None
    if args.torch:
        try:
            import torch
        except ImportError:
            print("--torch: PyTorch is not installed; timing TensorFlow only.", file=sys.stderr)
        else:
            if args.threads:
                torch.set_num_threads(args.threads)

    load_before = load_average()
    models = build_keras_models(configs)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="psr-latency-") as folder:
        signatures = export_and_load(models, Path(folder), per_image=args.per_image)
        nets = torch_models(configs) if torch is not None else {}
        results, checks = [], {}
        for batch in args.batch:
            images = rng.uniform(-1.0, 1.0, (batch, args.size, args.size, 3)).astype("float32")
            tf_images = tf.constant(images)
            runners = {("tensorflow", name): (lambda s=signature: s(images=tf_images)["images"].numpy())
                       for name, signature in signatures.items()}
            if torch is not None:
                torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

                def torch_runner(net):
                    def run():
                        with torch.no_grad():
                            return net(torch_images).numpy()
                    return run

                runners.update({("pytorch", name): torch_runner(net) for name, net in nets.items()})
            for name, model in models.items():
                # The export must compute what the Keras model computes (float32 summation order aside).
                exported = runners[("tensorflow", name)]()
                direct = model(tf_images, training=False).numpy()
                checks[name] = max(checks.get(name, 0.0), float(np.max(np.abs(exported - direct))))
            seconds = time_interleaved(runners, batch, args.warmup, args.repeats)
            for (framework, name), values in seconds.items():
                results.append({"framework": framework, "model": name, "batch": batch, **summarise(values, batch)})
    for row in results:
        teacher = next(r for r in results if r["framework"] == row["framework"] and r["model"] == TEACHER
                       and r["batch"] == row["batch"])
        row["ratio_teacher_to_model"] = round(teacher["p50_ms"] / row["p50_ms"], 3)

    model_rows = []
    for name in models:
        profile = profile_of(name, args.size)
        model_rows.append({"model": name, "architecture": "resnet_9blocks" if name == TEACHER else "mobile_resnet",
                           "macs": profile.macs, "params": profile.params, "macs_text": profile.macs_text(),
                           "params_text": profile.params_text(), "export_max_abs_diff": checks[name]})
    return {
        "size": args.size, "batches": args.batch, "repeats": args.repeats, "warmup": args.warmup,
        "threads": args.threads, "per_image": args.per_image, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "tensorflow_version": tf.__version__, "torch_version": getattr(torch, "__version__", None),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": load_average(),
        "models": model_rows, "results": results,
    }


def main() -> None:
    args = parse_args()
    args.batch = args.batch or [1, 8]
    args.config = args.config or list(DEFAULT_CONFIGS)
    configs = check_args(args)
    result = measure(args, configs)
    if args.json is not None:
        from psr.errors import PsrError
        from psr.rundir import atomic_write_json

        try:
            atomic_write_json(args.json, result)
        except PsrError as error:
            raise SystemExit(f"--json: {error}") from None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
