"""Imports PyTorch ResNet generator checkpoints (CUT / Hneg_SRC, CycleGAN) into psr.

A `.pth` file of these projects is a plain state dict: `model.<i>.weight` /
`.bias` for the convs of `nn.Sequential` entry i, `model.<i>.conv_block.<j>.*`
inside residual blocks and `model.<i>.filt` for the fixed blur filters of the
anti-aliased layers (buffers). The conversion matches every tensor to a psr
layer by that name and by shape, and refuses the whole file, before assigning
anything, if a key is missing, unexpected or mis-shaped.

Layout changes (spec §7.1): conv weights [out, in, kh, kw] -> [kh, kw, in, out];
transposed-conv weights [in, out, kh, kw] -> [kh, kw, out, in] (the same
transpose, because Keras stores transposed kernels as [kh, kw, out, in]).

PyTorch is imported only inside `load_torch_state_dict`.
"""

import os
import re
from collections.abc import Mapping

import numpy as np

from psr.errors import CheckpointError
from psr.models.layers import (
    BlurDownsample,
    BlurUpsample,
    InstanceNormalization,
    blur_filter_2d,
)
from psr.models.resnet_generator import ResnetBlock, ResnetGenerator

# Keys listed in full in an error message before the rest is only counted.
_MAX_LISTED_KEYS = 6

# CUT's `get_filter` taps and the gain of `Upsample` (stride ** 2).
_BLUR_BUFFERS = {
    BlurDownsample: blur_filter_2d(np.array([1.0, 2.0, 1.0])),
    BlurUpsample: blur_filter_2d(np.array([1.0, 3.0, 3.0, 1.0])) * 4.0,
}

# Instance-norm statistics that PyTorch < 0.4 saved (CycleGAN's 2017 checkpoints);
# CycleGAN's own loader deletes them because instance norm never uses them.
_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch `.pth` state dict into NumPy arrays.

    Args:
        path: file written by `torch.save(net.state_dict(), path)`.

    Returns:
        name -> array, with a `module.` prefix (DataParallel) removed.

    Raises:
        CheckpointError: PyTorch is not installed, the file is missing,
            truncated or unreadable, or it holds something other than a state dict.
    """
    try:
        import torch
    except ImportError:
        raise CheckpointError("PyTorch is needed to read .pth files: pip install torch") from None
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"PyTorch checkpoint not found: {path}; check the path")
    try:
        # weights_only: never run code from the pickle, only rebuild tensors.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot read PyTorch checkpoint {path} ({type(error).__name__}: {reason[:200]}); "
            "the file is truncated or not a .pth state dict: copy or download it again"
        ) from None
    if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
        found = type(loaded).__name__
        if isinstance(loaded, Mapping):
            found = f"dict with keys {_list_keys(loaded)}"
        raise CheckpointError(
            f"{path} is not a plain state dict (name -> tensor) but a {found}; "
            "pass the generator file saved by CUT / CycleGAN (e.g. latest_net_G.pth)"
        )
    state_dict = {str(name): value.detach().cpu().numpy() for name, value in loaded.items()}
    if state_dict and all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
    return state_dict


def _list_keys(keys) -> str:
    keys = sorted(keys, key=_natural_order)
    listed = ", ".join(keys[:_MAX_LISTED_KEYS])
    if len(keys) > _MAX_LISTED_KEYS:
        listed += f" (+{len(keys) - _MAX_LISTED_KEYS} more)"
    return listed


def _natural_order(key: str):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _shape(state_dict, key):
    value = state_dict.get(key)
    return None if value is None else tuple(value.shape)


def infer_resnet_generator_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Reads the ResnetGenerator arguments off the tensor names and shapes.

    Returns:
        dict with `input_channels`, `output_channels`, `filters`,
        `num_blocks`, `antialias`, `antialias_up`: the `ResnetGenerator`
        keyword arguments that reproduce the checkpoint's network.

    Raises:
        CheckpointError: the state dict is not a CUT / CycleGAN ResNet generator.
    """
    first = _shape(state_dict, "model.1.weight")
    if first is None or len(first) != 4 or first[2:] != (7, 7):
        raise CheckpointError(
            "the checkpoint is not a CUT/CycleGAN ResNet generator: no 7x7 conv `model.1.weight` "
            f"(found keys {_list_keys(state_dict)}); pass a generator file such as latest_net_G.pth"
        )
    filters, input_channels = first[0], first[1]
    # Downsampling: a stride-2 conv at entry 7 (CycleGAN / no_antialias), or
    # conv 4, IN, ReLU, blur 7 and the next conv at entry 8 (CUT).
    if _shape(state_dict, "model.7.weight") == (4 * filters, 2 * filters, 3, 3):
        antialias, first_block = False, 10
    elif _shape(state_dict, "model.8.weight") == (4 * filters, 2 * filters, 3, 3):
        antialias, first_block = True, 12
    else:
        raise CheckpointError(
            "the checkpoint is not a CUT/CycleGAN ResNet generator: no 3x3 conv "
            f"{2 * filters}->{4 * filters} at model.7 or model.8 (ngf={filters} from model.1.weight)"
        )
    num_blocks = 0
    while f"model.{first_block + num_blocks}.conv_block.1.weight" in state_dict:
        num_blocks += 1
    up = first_block + num_blocks
    if _shape(state_dict, f"model.{up}.weight") == (4 * filters, 2 * filters, 3, 3):
        antialias_up, last_conv = False, up + 7  # 2 x (convT, IN, ReLU), pad, conv
    elif _shape(state_dict, f"model.{up + 1}.weight") == (2 * filters, 4 * filters, 3, 3):
        antialias_up, last_conv = True, up + 9  # 2 x (blur, conv, IN, ReLU), pad, conv
    else:
        raise CheckpointError(
            "the checkpoint is not a CUT/CycleGAN ResNet generator: after "
            f"{num_blocks} residual blocks there is no upsampling conv at model.{up} or model.{up + 1}"
        )
    last = _shape(state_dict, f"model.{last_conv}.weight")
    if last is None or len(last) != 4 or last[1:] != (filters, 7, 7):
        raise CheckpointError(
            f"the checkpoint is not a CUT/CycleGAN ResNet generator: no final 7x7 conv at model.{last_conv}"
        )
    return {
        "input_channels": int(input_channels),
        "output_channels": int(last[0]),
        "filters": int(filters),
        "num_blocks": num_blocks,
        "antialias": antialias,
        "antialias_up": antialias_up,
    }


def _uses_dropout_layout(state_dict) -> bool:
    """True when residual blocks hold CycleGAN's Dropout, shifting the 2nd conv to `conv_block.6`."""
    return any(re.fullmatch(r"model\.\d+\.conv_block\.6\.weight", key) for key in state_dict)


def _expected_tensors(generator: ResnetGenerator, dropout_layout: bool) -> dict:
    """state-dict key -> (expected torch shape, psr layer, role) for every tensor of the generator."""
    expected = {}
    channels = generator.sequence_channels
    for prefix, layer in generator.torch_layers().items():
        if dropout_layout and prefix.endswith(".conv_block.5"):
            prefix = prefix[: -len("5")] + "6"
        if isinstance(layer, (BlurDownsample, BlurUpsample)):
            index = int(prefix.split(".")[1])
            size = _BLUR_BUFFERS[type(layer)].shape[0]
            expected[f"{prefix}.filt"] = ((channels[index], 1, size, size), layer, "filt")
            continue
        # Conv2d: Keras [kh, kw, in, out] <-> PyTorch [out, in, kh, kw].
        # ConvTranspose2d: Keras [kh, kw, out, in] <-> PyTorch [in, out, kh, kw].
        # Both are the same axis permutation.
        kh, kw, third, fourth = layer.kernel.shape
        torch_shape = (fourth, third, kh, kw)
        expected[f"{prefix}.weight"] = (torch_shape, layer, "kernel")
        expected[f"{prefix}.bias"] = ((layer.filters,), layer, "bias")
    return expected


def _norm_statistics_keys(generator: ResnetGenerator, state_dict, dropout_layout: bool) -> set:
    """Keys of saved instance-norm statistics that sit at instance-norm positions."""
    norm_prefixes = set()
    for index, layer in enumerate(generator.sequence):
        if isinstance(layer, InstanceNormalization):
            norm_prefixes.add(f"model.{index}")
        elif isinstance(layer, ResnetBlock):
            second_norm = 7 if dropout_layout else 6
            norm_prefixes.update({f"model.{index}.conv_block.2", f"model.{index}.conv_block.{second_norm}"})
    return {
        key for key in state_dict
        if key.rsplit(".", 1)[0] in norm_prefixes and key.rsplit(".", 1)[1] in _NORM_STATISTICS
    }


def state_dict_problems(state_dict: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                        ignored: set = frozenset()) -> list[str]:
    """What keeps `state_dict` from matching `expected` (`{key: (shape, ...)}`): missing, unexpected and
    mis-shaped keys, each as one short phrase (empty when it matches). `ignored` keys are not compared."""
    present = set(state_dict) - set(ignored)
    missing = set(expected) - present
    unexpected = present - set(expected)
    misshaped = {
        key: (tuple(state_dict[key].shape), spec[0])
        for key, spec in expected.items()
        if key in present and tuple(state_dict[key].shape) != spec[0]
    }
    problems = []
    if missing:
        problems.append(f"missing keys: {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_list_keys(unexpected)}")
    if misshaped:
        shown = sorted(misshaped, key=_natural_order)[:_MAX_LISTED_KEYS]
        listed = ", ".join(f"{key} {misshaped[key][0]} (expected {misshaped[key][1]})" for key in shown)
        if len(misshaped) > len(shown):
            listed += f" (+{len(misshaped) - len(shown)} more)"
        problems.append(f"mis-shaped keys: {listed}")
    return problems


def convert_resnet_generator(state_dict: Mapping[str, np.ndarray], generator: ResnetGenerator) -> None:
    """Assigns a PyTorch ResNet generator state dict to a psr `ResnetGenerator`.

    Every conv / transposed-conv weight and bias is matched by name and shape,
    the blur buffers are checked to hold CUT's fixed filters, and instance-norm
    statistics of PyTorch < 0.4 checkpoints are ignored. Both residual-block
    layouts are accepted: `conv_block.5` (no dropout) and `conv_block.6`
    (CycleGAN trained with dropout; dropout is the identity at inference).
    Nothing is assigned unless the whole state dict matches.

    Args:
        state_dict: name -> array, e.g. from `load_torch_state_dict`.
        generator: a psr generator built with the checkpoint's architecture
            (see `infer_resnet_generator_args`).

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys,
            or blur buffers that hold other filters.
    """
    dropout_layout = _uses_dropout_layout(state_dict)
    expected = _expected_tensors(generator, dropout_layout)
    ignored = _norm_statistics_keys(generator, state_dict, dropout_layout)
    problems = state_dict_problems(state_dict, expected, ignored)
    if problems:
        raise CheckpointError(
            "the PyTorch state dict does not match the psr generator "
            f"({_describe(generator)}): {'; '.join(problems)}. "
            f"Check filters / num_blocks / antialias in the spec, or infer them from the checkpoint "
            f"({_describe_checkpoint(state_dict)})"
        )

    for key, (_, layer, role) in expected.items():
        if role == "filt":
            reference = _BLUR_BUFFERS[type(layer)]
            if not np.allclose(state_dict[key], reference[None, None], atol=1e-6):
                raise CheckpointError(
                    f"blur buffer {key} does not hold CUT's fixed {reference.shape[0]}-tap filter; "
                    "the checkpoint comes from a different anti-aliasing variant, which psr does not support"
                )

    for key, (_, layer, role) in expected.items():
        if role == "kernel":
            # [out, in, kh, kw] / [in, out, kh, kw] -> Keras [kh, kw, in, out] / [kh, kw, out, in].
            layer.kernel.assign(np.transpose(np.asarray(state_dict[key], np.float32), (2, 3, 1, 0)))
            bias_key = key[: -len("weight")] + "bias"
            layer.bias.assign(np.asarray(state_dict[bias_key], np.float32))


def _describe(generator: ResnetGenerator) -> str:
    return (
        f"filters={generator.filters}, num_blocks={generator.num_blocks}, "
        f"antialias={generator.antialias}, antialias_up={generator.antialias_up}"
    )


def _describe_checkpoint(state_dict) -> str:
    try:
        args = infer_resnet_generator_args(state_dict)
    except CheckpointError:
        return "it does not look like a CUT/CycleGAN ResNet generator"
    return "it looks like " + ", ".join(f"{key}={value}" for key, value in args.items() if "channels" not in key)


def generator_from_torch_state_dict(
    state_dict: Mapping[str, np.ndarray], expected_args: Mapping | None = None
) -> ResnetGenerator:
    """Builds a `ResnetGenerator` with the checkpoint's architecture and its weights.

    Args:
        state_dict: name -> array, e.g. from `load_torch_state_dict`.
        expected_args: `ResnetGenerator` arguments from the experiment spec
            (any subset); a value that differs from the checkpoint is an error.

    Raises:
        CheckpointError: the checkpoint is not a ResNet generator, contradicts
            `expected_args`, or does not convert.
    """
    args = infer_resnet_generator_args(state_dict)
    for key, value in (expected_args or {}).items():
        if key not in args:
            raise ValueError(f"Unknown ResnetGenerator argument in `expected_args`. Received: {key}={value!r}")
        if args[key] != value:
            raise CheckpointError(
                f"the checkpoint has {key}={args[key]} but the spec says {key}={value}; "
                "fix the spec or pick the matching checkpoint"
            )
    generator = ResnetGenerator(**args)
    convert_resnet_generator(state_dict, generator)
    return generator


# === GAN-compression mobile students (sub_mobile_resnet / super_mobile_resnet) ===

_MOBILE_BLOCK_KEY = re.compile(r"model\.(\d+)\.conv_block\.1\.conv\.2\.weight")


def infer_mobile_resnet_args(state_dict: Mapping[str, np.ndarray]) -> dict:
    """`MobileResnetGenerator` arguments (config, channels, num_blocks) read from tensor shapes.

    A released compressed student stores no config; it follows from the conv widths
    (c0 = stem out, 2·c1, 4·c2 = the stride-2 convs' outputs, 4·c3..5 = block hidden widths, 2·c6 and c7
    the transposed convs' outputs).
    """
    blocks = sorted(int(m.group(1)) for key in state_dict if (m := _MOBILE_BLOCK_KEY.fullmatch(key)))
    needed = ("model.1.weight", "model.4.weight", "model.7.weight")
    if not blocks or blocks != list(range(10, 10 + len(blocks))) or len(blocks) % 3 or any(
        key not in state_dict for key in needed
    ):
        raise CheckpointError(
            "the state dict is not a GAN-compression mobile ResNet generator (expected model.1/4/7 convs and "
            "residual blocks model.10… with conv_block.1.conv.2); pass a sub_mobile_resnet or super_mobile_resnet G"
        )
    count = len(blocks)
    per_group = count // 3
    hidden = []
    for group in range(3):
        widths = {_shape(state_dict, f"model.{10 + i}.conv_block.1.conv.2.weight")[0]
                  for i in range(group * per_group, (group + 1) * per_group)}
        if len(widths) != 1:
            raise CheckpointError(
                f"residual blocks of group {group + 1} have different hidden widths {sorted(widths)}; "
                "a mobile ResNet config gives every block of a group one width"
            )
        hidden.append(widths.pop())
    up1 = _shape(state_dict, f"model.{10 + count}.weight")
    up2 = _shape(state_dict, f"model.{13 + count}.weight")
    final = _shape(state_dict, f"model.{17 + count}.weight")
    if up1 is None or up2 is None or final is None:
        raise CheckpointError(f"the mobile ResNet state dict lacks model.{10 + count}, model.{13 + count} or model.{17 + count}")
    stem = _shape(state_dict, "model.1.weight")
    widths = [stem[0], _shape(state_dict, "model.4.weight")[0], _shape(state_dict, "model.7.weight")[0],
              *hidden, up1[1], up2[1]]
    multipliers = (1, 2, 4, 4, 4, 4, 2, 1)
    if any(w % m for w, m in zip(widths, multipliers)):
        raise CheckpointError(f"conv widths {widths} are not those of a channel configuration (multiples of {multipliers})")
    return {
        "config": tuple(w // m for w, m in zip(widths, multipliers)),
        "input_channels": stem[1],
        "output_channels": final[0],
        "num_blocks": count,
    }


def convert_mobile_resnet_generator(state_dict: Mapping[str, np.ndarray], generator) -> None:
    """Assigns a PyTorch mobile ResNet state dict to a psr `MobileResnetGenerator` / `SuperMobileResnetGenerator`.

    Matched by name (`generator.torch_layers()`) and shape; nothing is assigned unless all match.
    Depthwise kernels [C, 1, kh, kw] -> (kh, kw, C, 1); other layouts as for the ResNet generator.
    """
    from keras.layers import DepthwiseConv2D

    expected = {}
    for prefix, layer in generator.torch_layers().items():
        kh, kw, third, fourth = layer.kernel.shape
        depthwise = isinstance(layer, DepthwiseConv2D)
        torch_shape = (third, fourth, kh, kw) if depthwise else (fourth, third, kh, kw)
        expected[f"{prefix}.weight"] = (torch_shape, layer, (2, 3, 0, 1) if depthwise else (2, 3, 1, 0))
        expected[f"{prefix}.bias"] = ((layer.bias.shape[0],), layer, None)
    statistics = {key for key in state_dict if key.rsplit(".", 1)[-1] in _NORM_STATISTICS}
    problems = state_dict_problems(state_dict, expected, statistics)
    if problems:
        raise CheckpointError(
            f"the PyTorch state dict does not match the mobile ResNet generator {generator.name}: "
            f"{'; '.join(problems)}. Check the channel configuration and num_blocks"
        )
    for key, (_, layer, permutation) in expected.items():
        if permutation is not None:
            layer.kernel.assign(np.transpose(np.asarray(state_dict[key], np.float32), permutation))
            layer.bias.assign(np.asarray(state_dict[key[: -len("weight")] + "bias"], np.float32))


def mobile_generator_from_torch_state_dict(state_dict: Mapping[str, np.ndarray]):
    """Builds the fixed-width `MobileResnetGenerator` of a released compressed student with its weights."""
    from psr.models.mobile_resnet import MobileResnetGenerator

    generator = MobileResnetGenerator(**infer_mobile_resnet_args(state_dict))
    convert_mobile_resnet_generator(state_dict, generator)
    return generator
