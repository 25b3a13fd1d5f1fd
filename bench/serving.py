"""Serving latency of an exported single-modal generator against PyTorch eager inference (issue #16 benchmark).

    python bench/serving.py --size 256 --size 1024 --batch 1 --batch 8 --repeats 5 --json serving.json
    python bench/serving.py --size 256 --batch 1 --repeats 10 --threads 1

Builds the horse→zebra generator of `experiments/horse2zebra.yaml` (CUT's antialiased `resnet_9blocks`,
ngf 64) with random weights, exports it with `psr.export.export_generator`, loads the SavedModel back and
times, at every `--size`² and `--batch`:

- `serving_default` (float images in [-1, 1]);
- `translate_bytes` (PNG bytes in and out, decoding and encoding included);
- `--torch` (default on when PyTorch imports): the same network re-stated in PyTorch
  (`bench/torch_reference_step.py`), eager under `torch.no_grad()`, i.e. the official `test.py` path.

Each setting gets `--warmup` untimed calls, then `--repeats` rounds in which the three run once each in a
rotating order (the machine drifts and other jobs share its cores). p50 / p95 latency per call and per
image, throughput at the p50 and the ratio psr / PyTorch are printed as one JSON object. Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psr  # noqa: E402,F401
from compression_latency import cpu_name, load_average, summarise, time_interleaved  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", default=None, help="image side (repeatable; 256, 1024)")
    parser.add_argument("--batch", type=int, action="append", default=None, help="batch size (repeatable; 1, 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads of both frameworks (0 = default)")
    parser.add_argument("--filters", type=int, default=64, help="ngf (tests use a tiny network)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager rows")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    args.size = args.size or [256, 1024]
    args.batch = args.batch or [1, 8]
    if any(s < 16 or s % 4 for s in args.size) or any(b < 1 for b in args.batch) or args.repeats < 1:
        parser.error("--size must be multiples of 4 (>= 16), --batch and --repeats >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from psr.builders import build_generator
    from psr.config import load_experiment
    from psr.data.images import encode_image
    from psr.export import SIGNATURE_BYTES, SIGNATURE_FLOAT, export_generator

    cfg = load_experiment(ROOT / "experiments" / "horse2zebra.yaml", [f"model.generator.filters={args.filters}"])
    generator = build_generator(cfg.model.generator)
    torch_net = None
    if not args.no_torch:
        try:
            import torch

            from torch_reference_step import ResnetGenerator as TorchResnetGenerator

            if args.threads:
                torch.set_num_threads(args.threads)
            torch_net = TorchResnetGenerator(ngf=args.filters, num_blocks=cfg.model.generator.num_blocks).eval()
        except ImportError:
            torch_net = None

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = export_generator(generator, Path(folder) / "export")
        loaded = tf.saved_model.load(str(path))
        floats, png = loaded.signatures[SIGNATURE_FLOAT], loaded.signatures[SIGNATURE_BYTES]
        rng = np.random.default_rng(0)
        for size in args.size:
            for batch in args.batch:
                images = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
                as_png = tf.constant([encode_image(x, "x.png") for x in images])
                tensor = tf.constant(images)
                runners = {
                    "serving_default": lambda: floats(images=tensor)["images"].numpy(),
                    "translate_bytes": lambda: png(image_bytes=as_png)["output_bytes"].numpy(),
                }
                if torch_net is not None:
                    nchw = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())

                    def torch_eager():
                        with torch.no_grad():
                            return torch_net(nchw).numpy()

                    runners["pytorch_eager"] = torch_eager
                seconds = time_interleaved(runners, batch, args.warmup, args.repeats)
                row = {"size": size, "batch": batch, **{k: summarise(v, batch) for k, v in seconds.items()}}
                if "pytorch_eager" in row:
                    row["serving_default_vs_pytorch"] = round(
                        row["serving_default"]["p50_ms"] / row["pytorch_eager"]["p50_ms"], 3)
                rows.append(row)
    result = {"cpu": cpu_name(), "load_average": load_average(), "threads": args.threads,
              "filters": args.filters, "repeats": args.repeats, "rows": rows}
    text = json.dumps(result)
    print(text)
    if args.json:
        from psr.rundir import atomic_write_text

        atomic_write_text(args.json, text + "\n")


if __name__ == "__main__":
    main()
