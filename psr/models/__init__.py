"""Networks and layers: CUT's ResNet generator, PatchGAN discriminator and patch projection head."""

from psr.models.fused import conv_unit, recompute_unit, run_layers
from psr.models.layers import (
    BlurDownsample,
    BlurUpsample,
    InstanceNormalization,
    PatchSampler,
    ReflectionPadding2D,
    TorchConv2DTranspose,
    ZeroPaddedConv2D,
    conv_kernel_initializer,
    gather_patches,
    instance_norm,
)
from psr.models.patchgan import PatchGANDiscriminator
from psr.models.projection_head import PatchMLPHead, l2_normalize
from psr.models.resnet_generator import DEFAULT_NCE_LAYERS, ResnetBlock, ResnetGenerator

__all__ = [
    "DEFAULT_NCE_LAYERS",
    "BlurDownsample",
    "BlurUpsample",
    "PatchGANDiscriminator",
    "PatchMLPHead",
    "PatchSampler",
    "ReflectionPadding2D",
    "ResnetBlock",
    "ResnetGenerator",
    "TorchConv2DTranspose",
    "ZeroPaddedConv2D",
    "conv_kernel_initializer",
    "conv_unit",
    "gather_patches",
    "InstanceNormalization",
    "instance_norm",
    "l2_normalize",
    "recompute_unit",
    "run_layers",
]

# SinCUT: StyleGAN2-style networks (spec §4.6).
from psr.models.stylegan2 import (  # noqa: E402
    SINCUT_NCE_LAYERS,
    Blur,
    ConvLayer,
    EqualConv2D,
    EqualLinear,
    FusedLeakyReLU,
    ResBlock,
    ScaledLeakyReLU,
    StyledConvUpsample,
    StyleGAN2Discriminator,
    StyleGAN2Generator,
)

__all__ += [
    "SINCUT_NCE_LAYERS",
    "Blur",
    "ConvLayer",
    "EqualConv2D",
    "EqualLinear",
    "FusedLeakyReLU",
    "ResBlock",
    "ScaledLeakyReLU",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "StyledConvUpsample",
]

# Multimodal (Hneg_SRC on StarGAN v2) networks (multimodal spec §2).
from psr.models.stargan2 import (  # noqa: E402
    AdaIN,
    AdaINResBlock,
    AffineInstanceNormalization,
    DomainTrunk,
    DownBlock,
    MappingNetwork,
    MultiTaskDiscriminator,
    PreActResBlock,
    StarGAN2Generator,
    StyleEncoder,
    UpBlock,
)

__all__ += [
    "AdaIN",
    "AdaINResBlock",
    "AffineInstanceNormalization",
    "DomainTrunk",
    "DownBlock",
    "MappingNetwork",
    "MultiTaskDiscriminator",
    "PreActResBlock",
    "StarGAN2Generator",
    "StyleEncoder",
    "UpBlock",
]
