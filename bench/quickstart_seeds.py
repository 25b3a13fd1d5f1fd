"""Train the quickstart for several seeds (the sweep machinery) and print its content scores per seed.

The quickstart's data has the ground-truth translation of every test image, so each run ends with PSNR /
SSIM of its test translations against it, and of the unchanged input (`content_scores.json`). Issue #15
asks that the translation beat the unchanged input on both in at least 4 of 5 seeds.

Usage:
    python bench/quickstart_seeds.py [--seeds 5] [--out runs/quickstart_seeds] [--parallel 1]
                                     [--experiment experiments/quickstart.yaml] [--set KEY=VALUE ...]

A rerun skips the seeds that finished and resumes the others (`main.py sweep`). Prints one line per seed
and a summary line, then one JSON line with every score. Not a test.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from psr.runtime import configure_host_memory  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=os.path.join(ROOT, "experiments", "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default="runs/quickstart_seeds", help="sweep folder")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (separate processes when > 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    configure_host_memory()  # as `main.py run` does, before TensorFlow starts

    from psr.errors import PsrError
    from psr.sweep import plan_sweep, run_sweep

    started = time.time()
    try:
        plan = plan_sweep(args.experiment, [], seeds=args.seeds, overrides=args.overrides)
        sweep = run_sweep(plan, args.out, parallel=args.parallel, progress=False)
    except PsrError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = []
    for run in plan.runs:
        scores = json.loads(sweep.run(run.name).content_scores.read_text(encoding="utf-8"))
        t, i = scores["translation"], scores["input_unchanged"]
        beats = t["psnr"] > i["psnr"] and t["ssim"] > i["ssim"]
        results.append({"seed": run.seed, "translation": t, "input_unchanged": i, "beats_input": beats})
        print(f"seed {run.seed}: translation PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f} | "
              f"input unchanged PSNR {i['psnr']:.2f} dB, SSIM {i['ssim']:.3f} | "
              f"{'beats' if beats else 'does not beat'} the input on both")
    wins = sum(result["beats_input"] for result in results)
    print(f"translation beats the unchanged input on PSNR and SSIM in {wins} of {len(results)} seeds "
          f"({time.time() - started:.0f} s including skipped runs; sweep folder {sweep.path})")
    print(json.dumps({"seeds": results, "wins": wins}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
