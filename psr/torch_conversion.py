"""`main.py import-torch`: an official PyTorch generator (`latest_net_G.pth`) → a psr run directory.

The run directory holds `config.yaml` (the experiment spec, with the generator
section as in the checkpoint), `checkpoints/latest` (generator weights only) and,
with `export=True`, `export/` (SavedModel). `main.py translate`, `export` and
`eval` then work on it as on a trained run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Optional, Sequence, Union

from psr.config import dump_config, load_experiment
from psr.errors import CheckpointError, OutputError, PsrError
from psr.rundir import (
    RunDir,
    atomic_write_json,
    atomic_write_text,
    check_output_path,
    os_errors,
    staged_folder,
)
from psr.trainers.checkpoints import write_checkpoint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_new_output(output: Path, checkpoint: Path, spec) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"The output {output} is a file, not a folder; choose a new folder for the imported model.")
    if output.exists() and any(output.iterdir()):
        raise OutputError(f"Output folder {output} is not empty; choose a new folder for the imported model.")
    check_output_path(output, inputs=[checkpoint, spec], what="output folder")


def import_torch_multimodal(checkpoint: Path, cfg, output: Path, export: bool = False) -> Path:
    """A StarGAN v2 / Hneg_SRC `<step>_nets_ema.ckpt` (G, M, E) → a `stargan2` run directory.

    The networks' sizes come from the checkpoint (they replace the spec's `model` values); the domain
    names are the spec's dataset folders when that dataset exists, else `0 … K−1`.
    """
    from psr.models.multimodal import MultimodalTranslator
    from psr.models.stargan2_torch import stargan2_from_torch_checkpoint

    nets = stargan2_from_torch_checkpoint(checkpoint)
    args = nets["args"]
    g, m, e = args["generator"], args["mapping"], args["style_encoder"]
    model = dataclasses.replace(
        cfg.model, num_domains=m["num_domains"], latent_dim=m["latent_dim"], style_dim=m["style_dim"],
        mapping_hidden=m["hidden"],
        generator=dataclasses.replace(cfg.model.generator, filters=g.get("filters"), max_filters=g["max_filters"],
                                      num_res_blocks=g["num_res"], num_adain_blocks=g["num_adain"]),
        style_encoder=dataclasses.replace(cfg.model.style_encoder, filters=e.get("filters"),
                                          max_filters=e["max_filters"]),
    )
    side = int(e["image_size"])
    cfg = dataclasses.replace(cfg, model=model, data=dataclasses.replace(cfg.data, crop_size=side, load_size=side),
                              log=dataclasses.replace(cfg.log, run_dir=str(output)))
    try:
        from psr.data.multidomain import discover_domains

        names = [d.name for d in discover_domains(cfg.data.root, "train", model.num_domains)]
    except PsrError:
        names = [str(i) for i in range(model.num_domains)]
    translator = MultimodalTranslator(nets["generator"], nets["mapping"], nets["style_encoder"],
                                      latent_dim=model.latent_dim)
    with staged_folder(output) as staging:
        run = RunDir(staging)
        atomic_write_json(run.marker, {"psr": "run"})
        atomic_write_text(run.config, dump_config(cfg, {"imported_from": str(checkpoint)}))
        atomic_write_json(run.domains, names)
        with os_errors(run.checkpoints_latest):
            write_checkpoint(run.checkpoints_latest, 0, 0, translator)
        atomic_write_json(run.imported_from, {"checkpoint": str(checkpoint.resolve()), "sha256": _sha256(checkpoint)})
        if export:
            from psr.export import export_multimodal

            export_multimodal(translator, run.export, cfg.export.pad_multiple, domains=names)
    return output


def embed_subnetwork(supernet, sub) -> None:
    """Writes a fixed-width sub-network's weights into the leading slices of a supernet (zeros elsewhere), so
    the supernet at the sub-network's config computes exactly what the sub-network computes."""
    import numpy as np

    for source, target in zip(sub._conv_layers(), supernet._conv_layers()):
        for weight, slot in zip(source.weights, target.weights):
            value = np.asarray(weight)
            full = np.zeros(tuple(slot.shape), value.dtype)
            full[tuple(slice(0, n) for n in value.shape)] = value
            slot.assign(full)


def import_torch_compressed(checkpoint: Path, cfg, output: Path, export: bool = False) -> Path:
    """A released GAN-compression student (`sub_mobile_resnet` at its config, or a `super_mobile_resnet`
    supernet) → a compression run directory whose export / translate / eval use that sub-network."""
    from psr.builders import build_compression_student
    from psr.compression import export_subnetwork, select_network
    from psr.models.profile import format_channel_config
    from psr.models.torch_import import (
        infer_mobile_resnet_args,
        load_torch_state_dict,
        mobile_generator_from_torch_state_dict,
    )

    state_dict = load_torch_state_dict(checkpoint)
    args = infer_mobile_resnet_args(state_dict)
    filters = max(args["config"])
    student = dataclasses.replace(cfg.model.student, num_blocks=args["num_blocks"],
                                  filters=max(filters, cfg.model.student.filters))
    if args["config"] != (student.filters,) * 8:  # a sub-network: the run always uses its config
        student = dataclasses.replace(student, fixed_config=format_channel_config(args["config"]))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, student=student),
                              log=dataclasses.replace(cfg.log, run_dir=str(output)))
    sub = mobile_generator_from_torch_state_dict(state_dict)
    supernet = build_compression_student(cfg.model, cfg.data.crop_size, args["input_channels"])
    embed_subnetwork(supernet, sub)
    select_network(supernet, output, cfg, config=args["config"])
    with staged_folder(output) as staging:
        run = RunDir(staging)
        atomic_write_json(run.marker, {"psr": "run"})
        atomic_write_text(run.config, dump_config(cfg, {"imported_from": str(checkpoint)}))
        with os_errors(run.checkpoints_latest):
            write_checkpoint(run.checkpoints_latest, 0, 0, supernet)
        atomic_write_json(run.imported_from, {"checkpoint": str(checkpoint.resolve()), "sha256": _sha256(checkpoint)})
        if export:
            export_subnetwork(supernet, run.export, cfg.export.pad_multiple)
    return output


def import_torch_generator(
    checkpoint: Union[str, Path],
    spec: Union[str, Path],
    output: Union[str, Path],
    export: bool = False,
    overrides: Optional[Sequence[str]] = None,
    infer_architecture: bool = False,
) -> Path:
    """Converts the checkpoint and writes a run directory; returns its path.

    Args:
        checkpoint: PyTorch state dict of a CUT / Hneg_SRC / CycleGAN ResNet generator.
        spec: experiment YAML whose `model.generator` describes the network.
        output: run directory to create (must not exist or be empty).
        export: also write `output/export` (SavedModel for TF Serving).
        overrides: `--set` overrides applied to the spec.
        infer_architecture: take filters / blocks / antialiasing from the checkpoint's
            tensor shapes instead of requiring the spec to match them.
    """
    from psr.models.torch_import import (
        generator_from_torch_state_dict,
        load_torch_state_dict,
    )

    checkpoint, output = Path(checkpoint), Path(output)
    cfg = load_experiment(spec, list(overrides or []))
    _check_new_output(output, checkpoint, spec)
    if cfg.method == "stargan2":
        return import_torch_multimodal(checkpoint, cfg, output, export=export)
    if cfg.method == "compression":
        return import_torch_compressed(checkpoint, cfg, output, export=export)
    state_dict = load_torch_state_dict(checkpoint)
    g = cfg.model.generator
    expected = None if infer_architecture else {
        "filters": g.filters, "num_blocks": g.num_blocks, "antialias": g.antialias, "antialias_up": g.antialias_up,
    }
    try:
        generator = generator_from_torch_state_dict(state_dict, expected)
    except CheckpointError as err:
        raise CheckpointError(
            f"{checkpoint}: {err} (or pass --infer-architecture to take the network from the checkpoint)"
        ) from None
    inferred = dataclasses.replace(
        g, filters=generator.filters, num_blocks=generator.num_blocks,
        antialias=generator.antialias, antialias_up=generator.antialias_up,
    )
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, generator=inferred),
        log=dataclasses.replace(cfg.log, run_dir=str(output)),
    )
    # The whole run directory is staged and renamed into place: an interrupted import leaves nothing.
    with staged_folder(output) as staging:
        run = RunDir(staging)
        atomic_write_json(run.marker, {"psr": "run"})
        atomic_write_text(run.config, dump_config(cfg, {"imported_from": str(checkpoint)}))
        with os_errors(run.checkpoints_latest):
            write_checkpoint(run.checkpoints_latest, 0, 0, generator)
        atomic_write_json(run.imported_from, {"checkpoint": str(checkpoint.resolve()), "sha256": _sha256(checkpoint)})
        if export:
            from psr.export import export_generator

            export_generator(generator, run.export, cfg.export.pad_multiple)
    return output
