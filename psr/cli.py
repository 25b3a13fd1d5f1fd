"""Command-line interface: `run`, `export`, `translate`, `eval`, `import-torch`, `profile`, `search`, `sweep`,
`compare`.

Each verb parses its arguments, loads and validates the configuration, then
calls one module. Errors in the user's input (`PsrError`) print one line and
exit with status 2; anything else keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import psr  # noqa: F401  (sets the Keras backend before keras is imported)
from psr.errors import (
    ConfigError,
    PsrError,
    describe_os_error,
    os_fault_errno,
    wrapped_user_error,
)
from psr.runtime import configure_host_memory


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.batch_size=4 (repeatable)",
    )


def cmd_run(args: argparse.Namespace) -> int:
    from psr.config import dump_config, load_experiment

    overrides = list(args.overrides)
    if args.run_dir:
        overrides.append(f"log.run_dir={args.run_dir}")
    cfg = load_experiment(args.experiment, overrides)
    if args.dry_run:
        from psr.methods import get_method

        print(f"# method: {cfg.method} — {get_method(cfg.method).description}")
        print(dump_config(cfg), end="")
        return 0
    from psr.experiment import train

    try:
        run_dir = train(cfg, progress=not args.quiet)
    except KeyboardInterrupt as err:
        # The conventional statuses of a process ended by the signal (128 + number).
        return 143 if getattr(err, "signal_name", "") == "SIGTERM" else 130
    print(f"Run directory: {run_dir}  (tensorboard --logdir {Path(run_dir) / 'tensorboard'})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from psr.inference import load_run_generator
    from psr.methods import get_method
    from psr.rundir import RunDir, check_output_path

    run = RunDir(args.run_dir)
    out = Path(args.output) if args.output else run.export_for(args.checkpoint)
    check_output_path(out, inputs=run.inputs, force=args.force)  # before the model is loaded
    network, cfg, checkpoint = load_run_generator(args.run_dir, args.checkpoint)
    options = {"domains": run.domain_names()} if run.domain_names() else {}
    if args.config:
        if cfg.method != "compression":
            raise ConfigError(f"--config picks a sub-network of a compression run; {args.run_dir} is a {cfg.method} run.")
        from psr.models.profile import parse_channel_config

        options["config"] = parse_channel_config(args.config)
    get_method(cfg.method).exporter()(network, out, cfg.export.pad_multiple, inputs=run.inputs, force=args.force,
                                      **options)
    signatures = ("serving_default, translate_latent, translate_reference, translate_bytes" if "domains" in options
                  else "serving_default, translate_bytes")
    if cfg.method == "compression":
        from psr.compression import current_config
        from psr.models.profile import format_channel_config

        chosen = options.get("config") or current_config(network)
        signatures += f"; sub-network {format_channel_config(chosen)}"
    print(f"Exported {checkpoint} → {out} (signatures: {signatures})")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from psr.inference import (
        load_multimodal_translator,
        load_translator,
        model_method,
        translate_files,
    )
    from psr.rundir import check_output_path

    inputs = list(args.inputs) + ([args.reference] if args.reference else [])
    check_output_path(args.output, inputs=inputs, force=args.force)  # before the model is loaded
    if model_method(args.model) == "stargan2":
        if not args.domain:
            raise ConfigError(f"{args.model} is a multi-domain model: pass --domain NAME (the target domain).")
        translator = load_multimodal_translator(args.model, args.domain, reference=args.reference, num=args.num,
                                                seed=args.seed, checkpoint=args.checkpoint)
    elif args.domain or args.reference:
        raise ConfigError(f"{args.model} translates into one domain: leave out --domain and --reference.")
    else:
        translator = load_translator(args.model, checkpoint=args.checkpoint)

    def progress(done: int, total: int, path: Path) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] {path}", file=sys.stderr)

    written = translate_files(translator, args.inputs, args.output, progress, force=args.force)
    print(f"Wrote {len(written)} images to {args.output}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from psr.evaluation import evaluate_model
    from psr.registry import unknown_metric_message

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    problem = unknown_metric_message(metrics)
    if problem:  # before the model is loaded or any image translated
        raise ConfigError(f"--metrics: {problem}")
    results = evaluate_model(
        args.model,
        data_root=args.data,
        metrics=metrics,
        direction=args.direction,
        checkpoint=args.checkpoint,
        inception_weights=args.inception_weights,
        features=args.features,
        feature_weights=args.feature_weights,
        kid_subset_size=args.kid_subset_size,
        max_images=args.max_images,
        image_size=args.image_size,
        cache_dir=args.cache_dir,
        paired_options={
            "lpips_alexnet_weights": args.lpips_alexnet_weights, "lpips_weights": args.lpips_weights,
            "lpips_against": args.lpips_against, "segmentation_network": args.segmentation_network,
            "segmentation_weights": args.segmentation_weights, "segmentation_labels": args.segmentation_labels,
            "label_format": args.label_format,
        },
    )
    print(json.dumps(results, indent=2))
    return 0


def cmd_import_torch(args: argparse.Namespace) -> int:
    from psr.torch_conversion import import_torch_generator

    out = import_torch_generator(
        args.checkpoint, args.spec, args.output, export=args.export, overrides=args.overrides,
        infer_architecture=args.infer_architecture,
    )
    print(f"Imported {args.checkpoint} → {out}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from psr.models.profile import (
        mobile_resnet_profile,
        parse_channel_config,
        resnet_generator_profile,
    )

    # A bare channel configuration profiles the super mobile student (spec compression §3.2) at it.
    if all(part.isdigit() for part in args.target.split("_")) and "_" in args.target:
        if args.config:
            raise ConfigError("pass the channel configuration once: as SPEC_OR_CONFIG or as --config, not both.")
        student = mobile_resnet_profile(parse_channel_config(args.target), image_size=args.image_size)
        print(f"student {args.target} at {args.image_size}x{args.image_size}: {student.describe()}")
        return 0
    from psr.config import load_experiment, load_run_config

    target = Path(args.target)
    cfg = load_run_config(target) if target.is_dir() else load_experiment(target)
    gen = cfg.model.generator
    if gen.architecture != "resnet" or gen.antialias or gen.antialias_up:
        raise ConfigError(
            f"{args.target}: profile counts the CycleGAN-layout ResNet teacher of GAN compression; set "
            "model.generator.architecture: resnet, antialias: false and antialias_up: false."
        )
    teacher = resnet_generator_profile(gen.filters, gen.num_blocks, image_size=args.image_size)
    print(f"teacher {args.target} at {args.image_size}x{args.image_size}: {teacher.describe()}")
    if args.config:
        student = mobile_resnet_profile(
            parse_channel_config(args.config), num_blocks=gen.num_blocks, image_size=args.image_size
        )
        print(f"student {args.config}: {student.describe()}")
        print(f"student / teacher: MACs {student.macs / teacher.macs:.4f}, params {student.params / teacher.params:.4f}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    from psr.compression import search_run, search_settings
    from psr.inference import load_run_generator
    from psr.rundir import RunDir

    run = RunDir(args.run_dir)
    if not run.is_psr_run():
        raise ConfigError(f"{args.run_dir} is not a psr run directory; pass the run of a `method: compression` experiment.")
    network, cfg, checkpoint = load_run_generator(args.run_dir, args.checkpoint)
    if cfg.method != "compression":
        raise ConfigError(f"{args.run_dir} is a {cfg.method} run; `search` needs a compression run (method: compression).")
    search = cfg.search
    changes = {key: getattr(args, key) for key in ("criterion", "source", "target", "target_statistics", "labels",
                                                   "max_images") if getattr(args, key) is not None}
    if changes:
        search = dataclasses.replace(search, **changes)
        cfg = dataclasses.replace(cfg, search=search)
    settings = search_settings(cfg, population_size=args.population, generations=args.generations,
                               mutate_prob=args.mutate_prob, weighted_sample=args.weighted_sample, seed=args.seed)
    if args.restart and run.search.is_dir():
        import shutil

        shutil.rmtree(run.search)  # psr's own search folder inside the run (state, journal, results, log)
    try:
        result = search_run(run, cfg, network, budget=args.budget, settings=settings, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\nInterrupted; rerun the same command to resume the search in {run.search}.", file=sys.stderr)
        return 130
    print(f"Best configuration: {result.best[-1].config if result.best else 'none'} "
          f"(from {checkpoint}; export it with: main.py export {args.run_dir})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from psr.sweep import default_sweep_folder, plan_sweep, run_sweep

    plan = plan_sweep(args.experiment, args.grid, seeds=args.seeds, overrides=args.overrides)  # before any run
    folder = Path(args.out) if args.out else default_sweep_folder(args.experiment, args.overrides)
    try:
        sweep = run_sweep(plan, folder, parallel=args.parallel, progress=not args.quiet)
    except KeyboardInterrupt as err:
        return 143 if getattr(err, "signal_name", "") == "SIGTERM" else 130
    print(f"Sweep folder: {sweep.path} ({len(plan.runs)} runs; compare them with: main.py compare {sweep.path})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from psr.compare import compare

    out = compare(args.inputs, args.output, grid_images=args.grid_images)
    print(f"Report: {out} (table.md, table.csv, plots/, grid.png)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="main.py", description="psr: unpaired image translation with hDCE + SRC (Keras 3 / TensorFlow)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train (or resume) an experiment from a YAML file")
    run.add_argument("experiment", help="experiment YAML, e.g. experiments/quickstart.yaml")
    run.add_argument("--run-dir", help="run directory (default: log.run_dir from the YAML)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved configuration and stop")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_overrides(run)
    run.set_defaults(func=cmd_run)

    export = sub.add_parser("export", help="write a TF Serving SavedModel from a run directory")
    export.add_argument("run_dir")
    export.add_argument("-o", "--output", help="output folder (default: RUN_DIR/export)")
    export.add_argument("--checkpoint", default="latest", choices=("latest", "best", "epochs"))
    export.add_argument("--force", action="store_true",
                        help="write into a folder that holds other files (none of them is deleted or overwritten)")
    export.add_argument("--config", metavar="C0_..._C7",
                        help="compression runs: the sub-network to export (default: the search's best, else the widest)")
    export.set_defaults(func=cmd_export)

    translate = sub.add_parser("translate", help="translate image files or folders at any resolution")
    translate.add_argument("model", help="run directory or exported SavedModel folder")
    translate.add_argument("inputs", nargs="+", help="image files or folders")
    translate.add_argument("-o", "--output", required=True, help="output folder")
    translate.add_argument("--checkpoint", default="latest", choices=("latest", "best", "epochs"))
    translate.add_argument("--domain", help="multi-domain models: the target domain's name")
    translate.add_argument("--reference", help="multi-domain models: take the style of this image (of --domain)")
    translate.add_argument("--num", type=int, default=1, help="multi-domain models: latent-guided outputs per image")
    translate.add_argument("--seed", type=int, default=0, help="multi-domain models: seed of the latent codes")
    translate.add_argument("--quiet", action="store_true")
    translate.add_argument("--force", action="store_true",
                           help="write into a folder that holds other files (none of them is overwritten)")
    translate.set_defaults(func=cmd_translate)

    ev = sub.add_parser("eval", help="FID/KID/LPIPS/FCN scores of a model's translations of the test split")
    ev.add_argument("model", help="run directory or exported SavedModel folder")
    ev.add_argument("--data", help="dataset root with testA/testB (default: the run's data.root)")
    ev.add_argument("--metrics", default="fid", help="comma-separated: fid,kid,lpips,fcn,miou")
    ev.add_argument("--direction", choices=("AtoB", "BtoA"), help="default: the run's data.direction")
    ev.add_argument("--checkpoint", default="latest", choices=("latest", "best", "epochs"))
    ev.add_argument("--features", choices=("auto", "pytorch-fid", "torchvision", "keras-imagenet"),
                    help="FID/KID features (default: the run's eval.features; auto = the paper's: pytorch-fid)")
    ev.add_argument("--feature-weights", metavar="PATH",
                    help="weights file (or a folder holding it) of --features, e.g. pt_inception-2015-12-05-6726825d.pth")
    ev.add_argument("--inception-weights", help="local InceptionV3 no-top .h5 file for --features keras-imagenet")
    ev.add_argument("--kid-subset-size", type=int, default=1000)
    ev.add_argument("--max-images", type=int, help="translate at most this many test images")
    ev.add_argument("--image-size", type=int, default=256, help="test images are resized to this (spec §6)")
    ev.add_argument("--cache-dir", help="where reference statistics are cached (default: DATA/.psr_cache)")
    # Paired metrics (lpips, fcn, miou); unset flags take the run's eval.* values.
    ev.add_argument("--lpips-alexnet-weights", help="torchvision alexnet-owt-7be5be79.pth (for lpips)")
    ev.add_argument("--lpips-weights", help="LPIPS lpips/weights/v0.1/alex.pth (for lpips)")
    ev.add_argument("--lpips-against", choices=("input", "target"), help="lpips partner (default: input)")
    ev.add_argument("--segmentation-network", choices=("drn_d_22", "drn_d_105"),
                    help="fcn/miou protocol: drn_d_22 (single-modal, default) or drn_d_105 (compression)")
    ev.add_argument("--segmentation-weights", help="drn_d_22_cityscapes.pth or drn-d-105_ms_cityscapes.pth")
    ev.add_argument("--segmentation-labels", help="GT label maps named like the source images (fcn/miou)")
    ev.add_argument("--label-format", choices=("color", "label_ids", "train_ids"),
                    help="GT label maps: colour maps (default), Cityscapes labelIds or trainIds")
    ev.set_defaults(func=cmd_eval)

    imp = sub.add_parser("import-torch", help="convert an official PyTorch generator (latest_net_G.pth) "
                                              "or StarGAN v2 / Hneg_SRC nets (<step>_nets_ema.ckpt)")
    imp.add_argument("checkpoint", help="PyTorch state dict, e.g. latest_net_G.pth or 100000_nets_ema.ckpt "
                                        "(with a method: stargan2 spec)")
    imp.add_argument("--spec", required=True, help="experiment YAML describing the generator")
    imp.add_argument("-o", "--output", required=True, help="run directory to create")
    imp.add_argument("--export", action="store_true", help="also write RUN_DIR/export (SavedModel)")
    imp.add_argument("--infer-architecture", action="store_true",
                     help="take filters/blocks/antialiasing from the checkpoint instead of the spec")
    _add_overrides(imp)
    imp.set_defaults(func=cmd_import_torch)

    prof = sub.add_parser("profile", help="parameters and MACs of a generator (GAN-compression convention)")
    prof.add_argument("target", metavar="SPEC_OR_CONFIG",
                      help="experiment YAML or run directory (its ResNet teacher), or a channel "
                           "configuration c0_..._c7 of the mobile student")
    prof.add_argument("--config", metavar="C0_..._C7", help="also profile the mobile student at this configuration")
    prof.add_argument("--image-size", type=int, default=256, help="side of the square input (spec: 256)")
    prof.set_defaults(func=cmd_profile)

    se = sub.add_parser("search", help="evolution search of a compression run's sub-networks under a MACs budget")
    se.add_argument("run_dir", help="run directory of a `method: compression` experiment")
    se.add_argument("--budget", type=float, help="largest MACs at 256x256 (default: search.budget), e.g. 3e9")
    se.add_argument("--checkpoint", default="latest", choices=("latest", "best", "epochs"))
    se.add_argument("--criterion", choices=("fid", "miou", "teacher_psnr"), help="default: search.criterion")
    se.add_argument("--source", help="held-out source images (default: search.source, else the training sources)")
    se.add_argument("--target", help="target-domain images for FID (default: search.target)")
    se.add_argument("--target-statistics", help="FID statistics .npz (mu, sigma) instead of --target")
    se.add_argument("--labels", help="miou: ground-truth label maps named like the source images")
    se.add_argument("--max-images", type=int, help="use at most this many search images")
    se.add_argument("--population", type=int, help="population size (default: search.population_size, 100)")
    se.add_argument("--generations", type=int, help="generations (default: search.generations, 500)")
    se.add_argument("--mutate-prob", type=float, help="default: search.mutate_prob")
    se.add_argument("--weighted-sample", type=float, help="default: search.weighted_sample")
    se.add_argument("--seed", type=int, help="default: search.seed (233)")
    se.add_argument("--restart", action="store_true",
                    help="discard the run's earlier search (needed to search again with other settings)")
    se.add_argument("--quiet", action="store_true", help="no progress bar")
    se.set_defaults(func=cmd_search)

    sweep = sub.add_parser("sweep", help="one run per combination of config values (× seeds), resumable")
    sweep.add_argument("experiment", help="experiment YAML every run starts from")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="values of one config key, e.g. --grid loss.contrastive=patchnce,dce,hdce (repeatable)")
    sweep.add_argument("--seeds", type=int, help="run every combination with train.seed = 0 .. N-1")
    sweep.add_argument("--out", help="sweep folder (default: beside the file's log.run_dir, <file>_sweep)")
    sweep.add_argument("--parallel", type=int, default=1, metavar="K",
                       help="run K `main.py run` processes at once (default 1: one after another, in this process)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_overrides(sweep)
    sweep.set_defaults(func=cmd_sweep)

    cmp = sub.add_parser("compare", help="table, curves and image grid of runs and sweeps")
    cmp.add_argument("inputs", nargs="+", metavar="RUN_OR_SWEEP", help="run directories and sweep folders")
    cmp.add_argument("-o", "--output", help="report folder (default: <first input>-compare beside it)")
    cmp.add_argument("--grid-images", type=int, default=4, metavar="N",
                     help="test images in grid.png (0: no grid)")
    cmp.set_defaults(func=cmd_compare)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_host_memory()  # before TensorFlow starts its threads (see psr/runtime.py)
        return args.func(args)
    except PsrError as err:
        return _fail(str(err))
    except OSError as err:
        # A fault of the machine (read-only folder, full disk, a file where a folder belongs): one line.
        return _fail(describe_os_error(err))
    except Exception as err:
        # An input problem found inside TensorFlow (a file that broke after start-up) arrives wrapped,
        # as do operating-system faults met by TensorFlow's own file writers.
        if type(err).__module__.split(".")[0] not in ("tensorflow", "h5py"):
            raise
        message = wrapped_user_error(err)
        if message is None and os_fault_errno(err) is not None:
            message = describe_os_error(err)
        if message is None:
            raise
        return _fail(message)


def _fail(message: str) -> int:
    print(f"error: {message.splitlines()[0] if message else 'unknown error'}", file=sys.stderr)
    return 2
