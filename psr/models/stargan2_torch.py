"""Imports the released StarGAN v2 / Hneg_SRC PyTorch nets into the psr StarGAN v2 networks.

The released file (`<step>_nets_ema.ckpt`, StarGAN v2's `CheckpointIO`) is
`torch.save({"generator": G.state_dict(), "mapping_network": M.state_dict(),
"style_encoder": E.state_dict()})`. The training file `<step>_nets.ckpt` also holds
`discriminator` (and `patch_sample`, the projection head, which is not converted here).

PyTorch names (Hneg_SRC `core/model_src.py`):
- generator: `from_rgb`, `encode.<i>` (strided `ConvBlk`: `norm1`, `conv1`; then `ResBlk`:
  `norm1`, `conv1`, `norm2`, `conv2`), `decode.<j>` (`AdainResBlk`: `norm1.fc`, `conv1`,
  `norm2.fc`, `conv2`; then up `ConvBlk`: `norm1`, `conv1`), `to_rgb.0` (IN), `to_rgb.2` (conv);
- mapping network: `shared.<2i>`, `unshared.<k>.<2i>` (Linear layers between ReLUs);
- style encoder: `shared.0` (conv), `shared.<1..n>` (`ResBlk`: `conv1`, `conv2`, `conv1x1`),
  `shared.<n+2>` (4x4 conv), `unshared.<k>` (Linear);
- discriminator: `main.*` as the style encoder's trunk, `main.<n+4>` (1x1 conv to K logits).

Layout changes: conv weight [out, in, kh, kw] -> Keras [kh, kw, in, out]; linear weight
[out, in] -> [in, out]; instance-norm `weight` / `bias` -> gamma / beta. Every network is
checked in full (missing, unexpected, mis-shaped keys) before anything is assigned.
The architecture (widths, block counts, style / latent sizes, number of domains) is read off
the tensor shapes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from psr.errors import CheckpointError
from psr.models.stargan2 import (
    AffineInstanceNormalization,
    MappingNetwork,
    MultiTaskDiscriminator,
    StarGAN2Generator,
    StyleEncoder,
)
from psr.models.torch_import import _list_keys, state_dict_problems
from psr.torch_weights import read_torch_state_dicts

# Top-level entries of the nets checkpoint psr converts (the first three are required).
_REQUIRED_NETS = ("generator", "mapping_network", "style_encoder")
_OPTIONAL_NETS = ("discriminator",)
# The official width cap (`max_conv_dim`); used when a checkpoint never reaches a cap.
_DEFAULT_MAX_FILTERS = 512


def _shape(state_dict: Mapping, key: str):
    value = state_dict.get(key)
    return None if value is None else tuple(value.shape)


def _not_a(net: str, reason: str) -> CheckpointError:
    return CheckpointError(
        f"the `{net}` entry is not a Hneg_SRC / StarGAN v2 {net.replace('_', ' ')}: {reason}; "
        "pass the <step>_nets_ema.ckpt file of a Hneg_SRC multimodal run"
    )


def _max_filters(widths: list[int]) -> int:
    """The smallest `max_filters` consistent with widths that double per level up to a cap."""
    for before, after in zip(widths, widths[1:]):
        if after < 2 * before:
            return after
    return max(_DEFAULT_MAX_FILTERS, widths[-1])


def _check_doubling(net: str, widths: list[int], max_filters: int) -> None:
    for before, after in zip(widths, widths[1:]):
        if after != min(2 * before, max_filters):
            raise _not_a(net, f"block widths {widths} do not double up to a cap")


# === Architecture from tensor shapes ===


def infer_generator_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`StarGAN2Generator` keyword arguments (except `image_size`) of a generator state dict."""
    first = _shape(state_dict, "from_rgb.weight")
    if first is None or len(first) != 4 or first[1:] != (3, 3, 3):
        raise _not_a("generator", f"no 3x3 conv `from_rgb.weight` from RGB (found keys {_list_keys(state_dict)})")
    if "encode.0.conv2.weight" in state_dict or "encode.0.conv1x1.weight" in state_dict:
        raise _not_a(
            "generator",
            "it has residual down blocks (`encode.0.conv2`), i.e. the upstream StarGAN v2 generator; "
            "psr builds Hneg_SRC's generator (strided 4x4 down blocks)",
        )
    widths = [first[0]]
    num_down = 0
    while _shape(state_dict, f"encode.{num_down}.conv1.weight") is not None:
        shape = _shape(state_dict, f"encode.{num_down}.conv1.weight")
        if shape[2:] != (4, 4) or f"encode.{num_down}.conv2.weight" in state_dict:
            break
        widths.append(shape[0])
        num_down += 1
    if num_down == 0:
        raise _not_a("generator", "no strided 4x4 down block `encode.0.conv1.weight`")
    num_res = 0
    while f"encode.{num_down + num_res}.conv2.weight" in state_dict:
        num_res += 1
    num_adain = 0
    while f"decode.{num_adain}.norm1.fc.weight" in state_dict and f"decode.{num_adain}.conv2.weight" in state_dict:
        num_adain += 1
    style_upsampling = f"decode.{num_adain}.norm1.fc.weight" in state_dict
    fc = "decode.0.norm1.fc.weight" if num_adain or style_upsampling else None
    if fc is None:
        raise _not_a("generator", "no AdaIN layer `decode.0.norm1.fc.weight` to read the style size from")
    fc_shape = _shape(state_dict, fc)
    if len(fc_shape) != 2:
        raise _not_a("generator", f"`{fc}` has shape {fc_shape}, not [2C, style_dim]")
    style_dim = fc_shape[1]
    max_filters = _max_filters(widths)
    _check_doubling("generator", widths, max_filters)
    return {
        "style_dim": int(style_dim),
        "filters": int(widths[0]),
        "max_filters": int(max_filters),
        "num_down": num_down,
        "num_res": num_res,
        "num_adain": num_adain,
        "style_upsampling": style_upsampling,
    }


def infer_mapping_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`MappingNetwork` keyword arguments of a mapping-network state dict."""
    first = _shape(state_dict, "shared.0.weight")
    if first is None or len(first) != 2:
        raise _not_a("mapping_network", f"no linear layer `shared.0.weight` (found keys {_list_keys(state_dict)})")
    hidden, latent_dim = first
    shared_layers = 0
    while f"shared.{2 * shared_layers}.weight" in state_dict:
        shared_layers += 1
    num_domains = 0
    while f"unshared.{num_domains}.0.weight" in state_dict:
        num_domains += 1
    if num_domains == 0:
        raise _not_a("mapping_network", "no per-domain head `unshared.0.0.weight`")
    head_layers = 0
    while f"unshared.0.{2 * head_layers}.weight" in state_dict:
        head_layers += 1
    last = _shape(state_dict, f"unshared.0.{2 * (head_layers - 1)}.weight")
    if len(last) != 2:
        raise _not_a("mapping_network", f"`unshared.0.{2 * (head_layers - 1)}.weight` has shape {last}, not [out, in]")
    return {
        "latent_dim": int(latent_dim),
        "style_dim": int(last[0]),
        "num_domains": num_domains,
        "hidden": int(hidden),
        "shared_layers": shared_layers,
        "head_layers": head_layers,
    }


def _infer_trunk_args(net: str, state_dict: Mapping[str, np.ndarray], prefix: str) -> tuple[dict, int]:
    """Trunk arguments (`image_size`, `filters`, `max_filters`) and its block count."""
    first = _shape(state_dict, f"{prefix}.0.weight")
    if first is None or len(first) != 4 or first[1:] != (3, 3, 3):
        raise _not_a(net, f"no 3x3 conv `{prefix}.0.weight` from RGB (found keys {_list_keys(state_dict)})")
    widths = [first[0]]
    num_blocks = 0
    while f"{prefix}.{num_blocks + 1}.conv1.weight" in state_dict:
        conv2 = _shape(state_dict, f"{prefix}.{num_blocks + 1}.conv2.weight")
        if conv2 is None or len(conv2) != 4:
            raise _not_a(net, f"residual block `{prefix}.{num_blocks + 1}` has no 3x3 conv `conv2.weight`")
        widths.append(conv2[0])
        num_blocks += 1
    last = _shape(state_dict, f"{prefix}.{num_blocks + 2}.weight")
    if last is None or len(last) != 4 or last[2:] != (4, 4):
        raise _not_a(net, f"no 4x4 conv `{prefix}.{num_blocks + 2}.weight` after {num_blocks} residual blocks")
    max_filters = _max_filters(widths)
    _check_doubling(net, widths, max_filters)
    # log2(image_size) - 2 blocks bring the image to 4x4.
    return {"image_size": 2 ** (num_blocks + 2), "filters": int(widths[0]), "max_filters": int(max_filters)}, num_blocks


def infer_style_encoder_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`StyleEncoder` keyword arguments of a style-encoder state dict."""
    args, _ = _infer_trunk_args("style_encoder", state_dict, "shared")
    num_domains = 0
    while f"unshared.{num_domains}.weight" in state_dict:
        num_domains += 1
    if num_domains == 0:
        raise _not_a("style_encoder", "no per-domain head `unshared.0.weight`")
    head = _shape(state_dict, "unshared.0.weight")
    if len(head) != 2:
        raise _not_a("style_encoder", f"`unshared.0.weight` has shape {head}, not [style_dim, C]")
    return {**args, "style_dim": int(head[0]), "num_domains": num_domains}


def infer_discriminator_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`MultiTaskDiscriminator` keyword arguments of a discriminator state dict."""
    args, num_blocks = _infer_trunk_args("discriminator", state_dict, "main")
    head = _shape(state_dict, f"main.{num_blocks + 4}.weight")
    if head is None or len(head) != 4 or head[2:] != (1, 1):
        raise _not_a("discriminator", f"no 1x1 conv `main.{num_blocks + 4}.weight` to the domain logits")
    return {**args, "num_domains": int(head[0])}


# === Conversion ===


def _expected_tensors(model) -> dict:
    """state-dict key -> (torch shape, Keras variable, NumPy transform to the Keras layout)."""
    expected = {}
    for prefix, layer in model.torch_layers().items():
        if isinstance(layer, AffineInstanceNormalization):
            channels = layer.gamma.shape[0]
            expected[f"{prefix}.weight"] = ((channels,), layer.gamma, None)
            expected[f"{prefix}.bias"] = ((channels,), layer.beta, None)
            continue
        if isinstance(layer, keras.layers.Dense):
            in_features, out_features = layer.kernel.shape
            expected[f"{prefix}.weight"] = ((out_features, in_features), layer.kernel, lambda w: w.T)
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, in_channels, out_channels = layer.kernel.shape
            expected[f"{prefix}.weight"] = (
                (out_channels, in_channels, kh, kw), layer.kernel, lambda w: np.transpose(w, (2, 3, 1, 0))
            )
        else:
            raise TypeError(f"No PyTorch mapping for layer {layer.name} of type {type(layer).__name__}")
        if layer.use_bias:
            expected[f"{prefix}.bias"] = ((layer.bias.shape[0],), layer.bias, None)
    return expected


def convert_stargan2_network(state_dict: Mapping[str, np.ndarray], model, net: str) -> None:
    """Assigns one PyTorch state dict to the matching psr StarGAN v2 network.

    Args:
        state_dict: name -> array of one network (e.g. the checkpoint's `generator` entry).
        model: a psr `StarGAN2Generator`, `MappingNetwork`, `StyleEncoder` or
            `MultiTaskDiscriminator` with the checkpoint's architecture.
        net: the checkpoint entry name, for messages.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped keys; nothing is
            assigned then.
    """
    expected = _expected_tensors(model)
    problems = state_dict_problems(state_dict, expected)
    if problems:
        raise CheckpointError(
            f"the `{net}` state dict does not match the psr {type(model).__name__} built from its shapes: "
            f"{'; '.join(problems)}; the file is not an unmodified Hneg_SRC / StarGAN v2 checkpoint"
        )
    for key, (_, variable, transform) in expected.items():
        value = np.asarray(state_dict[key], np.float32)
        variable.assign(transform(value) if transform is not None else value)


def load_stargan2_nets(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Reads a StarGAN v2 nets checkpoint: entry name -> state dict (read without torch when possible).

    Raises:
        CheckpointError: the file is unreadable or lacks a `generator`, `mapping_network`
            or `style_encoder` state dict.
    """
    entries = read_torch_state_dicts(path)
    missing = [name for name in _REQUIRED_NETS if not isinstance(entries.get(name), dict)]
    if missing:
        found = _list_keys(entries) if entries else "nothing"
        raise CheckpointError(
            f"{os.fspath(path)} is not a StarGAN v2 / Hneg_SRC nets checkpoint: expected a dict with the state dicts "
            f"{', '.join(_REQUIRED_NETS)}, found {found}; pass the <step>_nets_ema.ckpt file"
        )
    return {name: entries[name] for name in _REQUIRED_NETS + _OPTIONAL_NETS if isinstance(entries.get(name), dict)}


def infer_stargan2_args(nets: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict]:
    """Keyword arguments of every network in `nets`, checked against each other.

    Returns:
        {"generator": ..., "mapping": ..., "style_encoder": ...[, "discriminator": ...]}:
        keyword arguments of `StarGAN2Generator`, `MappingNetwork`, `StyleEncoder`
        [and `MultiTaskDiscriminator`].
    """
    encoder = infer_style_encoder_args(nets["style_encoder"])
    args = {
        "generator": {"image_size": encoder["image_size"], **infer_generator_args(nets["generator"])},
        "mapping": infer_mapping_args(nets["mapping_network"]),
        "style_encoder": encoder,
    }
    if "discriminator" in nets:
        args["discriminator"] = infer_discriminator_args(nets["discriminator"])
    style_dims = {name: args[name]["style_dim"] for name in ("generator", "mapping", "style_encoder")}
    if len(set(style_dims.values())) != 1:
        raise CheckpointError(
            f"the checkpoint's networks disagree on the style size ({style_dims}); "
            "the entries come from different runs: pass one run's <step>_nets_ema.ckpt"
        )
    domains = {name: args[name]["num_domains"] for name in ("mapping", "style_encoder", "discriminator") if name in args}
    if len(set(domains.values())) != 1:
        raise CheckpointError(
            f"the checkpoint's networks disagree on the number of domains ({domains}); "
            "the entries come from different runs: pass one run's <step>_nets_ema.ckpt"
        )
    return args


def stargan2_from_torch_checkpoint(path: str | os.PathLike) -> dict:
    """Builds the psr StarGAN v2 networks of a Hneg_SRC / StarGAN v2 nets checkpoint, with its weights.

    Args:
        path: `<step>_nets_ema.ckpt` (or `<step>_nets.ckpt`) written by StarGAN v2's `CheckpointIO`.

    Returns:
        {"generator": StarGAN2Generator, "mapping": MappingNetwork, "style_encoder": StyleEncoder,
        "args": infer_stargan2_args(...)}, plus "discriminator" when the file holds one.

    Raises:
        CheckpointError: one line naming what is wrong with the file and what was expected.
    """
    nets = load_stargan2_nets(path)
    try:
        args = infer_stargan2_args(nets)
    except CheckpointError as error:
        raise CheckpointError(f"{os.fspath(path)}: {error}") from None
    models = {
        "generator": StarGAN2Generator(**args["generator"]),
        "mapping": MappingNetwork(**args["mapping"]),
        "style_encoder": StyleEncoder(**args["style_encoder"]),
    }
    if "discriminator" in args:
        models["discriminator"] = MultiTaskDiscriminator(**args["discriminator"])
    entry_names = {"generator": "generator", "mapping": "mapping_network", "style_encoder": "style_encoder",
                   "discriminator": "discriminator"}
    for name, model in models.items():
        try:
            convert_stargan2_network(nets[entry_names[name]], model, entry_names[name])
        except CheckpointError as error:
            raise CheckpointError(f"{os.fspath(path)}: {error}") from None
    return {**models, "args": args}


__all__ = [
    "convert_stargan2_network",
    "infer_discriminator_args",
    "infer_generator_args",
    "infer_mapping_args",
    "infer_stargan2_args",
    "infer_style_encoder_args",
    "load_stargan2_nets",
    "stargan2_from_torch_checkpoint",
]
