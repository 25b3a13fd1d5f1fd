"""Seconds per training step and peak memory of the official PyTorch Hneg_SRC step (issue #3 reference).

    python bench/torch_reference_step.py --size 128 --steps 5            # PyTorch's default thread count
    python bench/torch_reference_step.py --size 128 --steps 5 --threads 2
    python bench/torch_reference_step.py --size 128 --mixed-precision                          # CPU: bf16 autocast
    python bench/torch_reference_step.py --size 256 --device cuda --mixed-precision            # CUDA: bf16 autocast
    python bench/torch_reference_step.py --size 256 --device cuda --mixed-precision --amp-dtype float16  # + GradScaler

A self-contained PyTorch re-statement of ONE training iteration of the official code (jcy132/Hneg_SRC,
Single-modal, a fork of taesungp/contrastive-unpaired-translation), horse→zebra settings, so that
bench/train_step.py (psr, Keras/TensorFlow) can be timed next to it on the same machine. It follows
shared/spec/single_modal.md §1, §2, §4, §5 and the official `cut_model.py`, `hDCE.py`, `SRC.py`,
`networks.py`: ResNet generator ngf 64, 9 blocks, antialiased down/up sampling; PatchGAN ndf 64, 3 layers,
antialiased; PatchSampleF (5 layers × 256 patches, 2-layer MLPs of width 256); lsgan; hDCE on X→Y and on
the identity branch Y→Y, SRC (JSD) on X→Y; λ_HDCE 0.1, λ_SRC 0.05, Γ curriculum 50 → 10 (epoch 1); Adam
2e-4 (0.5, 0.999) for G, D and F; the official number of generator and encoder passes (one G pass on
[x, y], then four encoder passes). Random images stand in for data (the data pipeline is not timed).
Two generalisations, identical to the official code wherever that code runs: batch > 1 uses per-image
[B, N, N] relation matrices (spec §1.7; the official SRC fails for B > 1, Hneg_SRC issue #5), and the
diagonal masks have the number of patches actually drawn (the official SRC uses eye(256), which fails
when a layer has fewer than 256 positions, i.e. for images smaller than 64×64).

The first step also does what the official train.py does on its first iteration: data-dependent
initialisation (a forward and both backward passes that create F's MLPs, then F's optimiser) and the LR
schedulers; it is timed separately as first_step_s. Peak memory is the process's peak resident set size
(ru_maxrss) in a fresh process, which includes PyTorch itself; on CUDA also the peak of allocated device
memory. Nothing from psr or TensorFlow is imported. Prints one JSON line.

`--mixed-precision` is psr's `train.mixed_precision` re-stated: autocast around the networks and the
projection head, the losses in float32 (psr computes every loss in float32), float32 weights and Adam.
float16 (CUDA only) adds dynamic loss scaling (one torch.amp.GradScaler per loss: D's, and G's + F's).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# horse→zebra settings (script/train.sh of jcy132/Hneg_SRC plus the CUT option defaults; spec §5)
NCE_LAYERS = [0, 4, 8, 12, 16]
NUM_PATCHES = 256
NETF_NC = 256
NCE_T = 0.07
LAMBDA_GAN = 1.0
LAMBDA_HDCE = 0.1
LAMBDA_SRC = 0.05
HDCE_GAMMA, HDCE_GAMMA_MIN = 50.0, 10.0
N_EPOCHS, N_EPOCHS_DECAY = 200, 200
EPOCH = 1  # the curriculum is read at the first epoch
LR, BETAS = 2e-4, (0.5, 0.999)
INIT_GAIN = 0.02


# === Networks (official networks.py, init_type xavier) ===


def binomial_filter(taps: list[float]) -> torch.Tensor:
    taps = torch.tensor(taps, dtype=torch.float32)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


class BlurDown(nn.Module):
    """CUT `Downsample`: reflect pad 1, fixed [1,2,1]x[1,2,1]/16 filter per channel, stride 2 (spec §4.2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", binomial_filter([1, 2, 1])[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class BlurUp(nn.Module):
    """CUT `Upsample`: replicate pad 1, transposed [1,3,3,1]^2/64*4 filter, stride 2, padding 2, crop 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("filt", (binomial_filter([1, 3, 3, 1]) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        out = F.conv_transpose2d(padded, self.filt, stride=2, padding=2, groups=x.shape[1])
        return out[:, :, 1:-1, 1:-1]


class ResBlock(nn.Module):
    """x + [reflect pad, conv 3x3, IN, ReLU, reflect pad, conv 3x3, IN](x); no dropout (no_dropout is the default)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """`resnet_9blocks`, antialiased: one flat nn.Sequential so the NCE layer indices match (spec §4.1).

    InstanceNorm2d defaults are CUT's `instance` norm (affine=False, no running statistics); every conv has a
    bias because the norm is InstanceNorm. In-place ReLUs as in the original (they affect peak memory).
    """

    def __init__(self, ngf: int = 64, num_blocks: int = 9):
        super().__init__()
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for mult in (1, 2):
            out = ngf * mult * 2
            layers += [nn.Conv2d(ngf * mult, out, 3, stride=1, padding=1), nn.InstanceNorm2d(out), nn.ReLU(True),
                       BlurDown(out)]
        layers += [ResBlock(ngf * 4) for _ in range(num_blocks)]
        for mult in (4, 2):
            out = ngf * mult // 2
            layers += [BlurUp(ngf * mult), nn.Conv2d(ngf * mult, out, 3, padding=1), nn.InstanceNorm2d(out),
                       nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, layers: list[int] | None = None, encode_only: bool = False):
        if not layers:
            return self.model(x)
        # Encoder mode as the official forward: run the list in order, keep the outputs of the listed entries,
        # stop after the last one when encode_only (indices 0..16, i.e. through the 5th residual block).
        feats = []
        for index, layer in enumerate(self.model):
            x = layer(x)
            if index in layers:
                feats.append(x)
            if encode_only and index == layers[-1]:
                return feats
        return x, feats


class PatchGANDiscriminator(nn.Module):
    """`basic` NLayerDiscriminator, n_layers 3, ndf 64, antialiased, InstanceNorm (spec §4.4); 256 → 30x30."""

    def __init__(self, ndf: int = 64, num_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(3, ndf, 4, stride=1, padding=1), nn.LeakyReLU(0.2, True), BlurDown(ndf)]
        mult = 1
        for n in range(1, num_layers):
            previous, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=1, padding=1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True), BlurDown(ndf * mult)]
        previous, mult = mult, min(2**num_layers, 8)
        layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=1, padding=1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """The official `Normalize(2)`: x / (||x||_2 + 1e-7) along dim 1."""
    return x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


class PatchSampleF(nn.Module):
    """`mlp_sample` projection head (spec §4.3); its MLPs are created on the first call from the feature widths."""

    def __init__(self, width: int = NETF_NC):
        super().__init__()
        self.width = width
        self.mlps = None

    def create_mlps(self, feats: list[torch.Tensor]) -> None:
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(feat.shape[1], self.width), nn.ReLU(), nn.Linear(self.width, self.width))
            for feat in feats
        )
        init_weights(self)  # the official create_mlp re-runs init_net on F
        self.to(feats[0].device)

    def forward(self, feats: list[torch.Tensor], num_patches: int, patch_ids: list[torch.Tensor] | None = None):
        if self.mlps is None:
            self.create_mlps(feats)
        pooled, ids = [], []
        for index, feat in enumerate(feats):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # [B, H*W, C], row-major (h, w)
            if patch_ids is None:
                # Official: a numpy permutation, truncated; the same ids for every image in the batch.
                perm = np.random.permutation(flat.shape[1])[: min(num_patches, flat.shape[1])]
                patch_id = torch.as_tensor(perm, dtype=torch.long, device=flat.device)
            else:
                patch_id = patch_ids[index]
            sample = self.mlps[index](flat[:, patch_id, :].flatten(0, 1))  # [B*N, C_l] -> [B*N, 256]
            pooled.append(l2_normalize(sample))
            ids.append(patch_id)
        return pooled, ids


def init_weights(net: nn.Module) -> None:
    """init_type xavier, gain 0.02: xavier-normal Conv/Linear weights, zero biases; blur filters are buffers."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight, gain=INIT_GAIN)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


# === Losses (hDCE.py, SRC.py, GANLoss lsgan) ===


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    prediction = prediction.float()  # float32 losses, as psr (a no-op without autocast)
    target = torch.tensor(1.0 if target_is_real else 0.0, device=prediction.device).expand_as(prediction)
    return F.mse_loss(prediction, target)


def curriculum_gamma(epoch: int) -> float:
    """Γ(e) = Γ_o + (Γ_min − Γ_o)·e/T (spec §3; no step for horse→zebra)."""
    return HDCE_GAMMA + (HDCE_GAMMA_MIN - HDCE_GAMMA) * epoch / (N_EPOCHS + N_EPOCHS_DECAY)


def src_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, batch: int, only_weight: bool, epoch: int):
    """SRC (JSD of the patch-relation softmaxes) and the hard-negative weights for hDCE (spec §1.3, §1.5).

    Per image: the official code hard-codes one image ([1, B*N, B*N]), which fails for B > 1 (issue #5);
    this uses [B, N, N] (spec §1.7), identical at B = 1, and averages the per-image JSD sums over B.
    """
    feat_k = l2_normalize(feat_k.detach()).view(batch, -1, feat_k.shape[1])
    feat_q = l2_normalize(feat_q).view(batch, -1, feat_q.shape[1])
    spatial_q = torch.bmm(feat_q, feat_q.transpose(2, 1))
    spatial_k = torch.bmm(feat_k, feat_k.transpose(2, 1))
    weight_seed = spatial_k.clone().detach()
    diagonal = torch.eye(weight_seed.shape[1], dtype=torch.bool, device=weight_seed.device)[None]
    weight_seed.masked_fill_(diagonal, -10.0)
    weight = torch.softmax(weight_seed / curriculum_gamma(epoch), dim=2).detach()
    weight = weight / weight.max(dim=2, keepdim=True).values
    if only_weight:
        return 0.0, weight
    p_q = torch.softmax(spatial_q, dim=1)  # axis 1 of [B, N, N], as the official code
    p_k = torch.softmax(spatial_k, dim=1).detach()
    log_m = torch.log(0.5 * (p_q + p_k))
    # KLDivLoss(reduction="sum", log_target=True)(log m, log p) = Σ p·(log p − log m)
    kl_q = (p_q * (torch.log(p_q) - log_m)).sum()
    kl_k = (p_k * (torch.log(p_k) - log_m)).sum()
    return 0.5 * (kl_q + kl_k) / batch, weight


def hdce_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, weight: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-row hDCE as the official PatchHDCELoss: value = weighted InfoNCE, gradient = weighted DCE (§1.4)."""
    rows, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = torch.bmm(feat_q.view(rows, 1, dim), feat_k.view(rows, dim, 1)).view(rows, 1)
    feat_q = feat_q.view(batch, -1, dim)
    feat_k = feat_k.view(batch, -1, dim)
    num_patches = feat_q.shape[1]
    l_neg = torch.bmm(feat_q, feat_k.transpose(2, 1)) * weight
    diagonal = torch.eye(num_patches, dtype=torch.bool, device=l_neg.device)[None]
    l_neg = l_neg.masked_fill(diagonal, -10.0).view(-1, num_patches)
    v = torch.logsumexp((l_neg - l_pos) / NCE_T, dim=1)
    loss_vec = torch.exp(v - v.detach())
    logits = torch.cat((l_pos, l_neg), dim=1) / NCE_T  # monitoring value (InfoNCE with the positive)
    targets = torch.zeros(rows, dtype=torch.long, device=logits.device)
    cross_entropy = F.cross_entropy(logits, targets, reduction="none")
    return loss_vec.mean() - 1 + cross_entropy.detach()


# === The model (cut_model.py: forward, compute_D_loss, compute_G_loss, optimize_parameters) ===


class CUTModel:
    """`amp_dtype`: None for float32, else the autocast dtype; float16 gets dynamic loss scaling."""

    def __init__(self, device: str = "cpu", amp_dtype: torch.dtype | None = None):
        self.net_g = ResnetGenerator()
        self.net_d = PatchGANDiscriminator()
        self.net_f = PatchSampleF()
        for net in (self.net_g, self.net_d):
            init_weights(net)
            net.to(device)
        self.device = device
        self.amp_dtype = amp_dtype
        scaling = amp_dtype == torch.float16
        self.scaler_d = torch.amp.GradScaler(device, enabled=scaling)
        self.scaler_g = torch.amp.GradScaler(device, enabled=scaling)
        self.optimizer_g = torch.optim.Adam(self.net_g.parameters(), lr=LR, betas=BETAS)
        self.optimizer_d = torch.optim.Adam(self.net_d.parameters(), lr=LR, betas=BETAS)
        self.optimizer_f = None
        self.losses = {}

    def set_input(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        self.real_a, self.real_b = real_a, real_b

    def forward(self) -> None:
        fake = self.net_g(torch.cat((self.real_a, self.real_b), dim=0))  # dce_idt: one G pass on [x, y]
        self.fake_b, self.idt_b = fake[: self.real_a.shape[0]], fake[self.real_a.shape[0]:]

    def autocast(self, enabled: bool = True):
        """Mixed precision for the networks; `enabled=False` for the float32 losses."""
        return torch.autocast(self.device, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=enabled and self.amp_dtype is not None)

    def compute_d_loss(self) -> torch.Tensor:
        loss_fake = lsgan_loss(self.net_d(self.fake_b.detach()), False).mean()
        loss_real = lsgan_loss(self.net_d(self.real_b), True).mean()
        self.losses.update(D_fake=loss_fake.detach(), D_real=loss_real.detach())
        return (loss_fake + loss_real) * 0.5

    def compute_g_loss(self) -> torch.Tensor:
        batch = self.real_a.shape[0]
        loss_gan = lsgan_loss(self.net_d(self.fake_b), True).mean() * LAMBDA_GAN
        self.losses["G_GAN"] = loss_gan.detach()
        # Four separate encoder passes (G through layer 16), as the official code.
        fake_b_feat = self.net_g(self.fake_b, NCE_LAYERS, encode_only=True)
        real_a_feat = self.net_g(self.real_a, NCE_LAYERS, encode_only=True)
        fake_b_pool, sample_ids = self.net_f(fake_b_feat, NUM_PATCHES, None)
        real_a_pool, _ = self.net_f(real_a_feat, NUM_PATCHES, sample_ids)
        idt_b_feat = self.net_g(self.idt_b, NCE_LAYERS, encode_only=True)
        real_b_feat = self.net_g(self.real_b, NCE_LAYERS, encode_only=True)
        idt_b_pool, _ = self.net_f(idt_b_feat, NUM_PATCHES, sample_ids)
        real_b_pool, _ = self.net_f(real_b_feat, NUM_PATCHES, sample_ids)
        with self.autocast(enabled=False):
            pools = [[feat.float() for feat in pool] for pool in (fake_b_pool, real_a_pool, idt_b_pool, real_b_pool)]
            return loss_gan + self.contrastive_loss(*pools, batch)

    def contrastive_loss(self, fake_b_pool, real_a_pool, idt_b_pool, real_b_pool, batch: int) -> torch.Tensor:
        """hDCE on X→Y and Y→Y plus SRC on X→Y, from the float32 pooled patches (compute_G_loss's NCE part)."""
        loss_src, weights = 0.0, []
        for f_q, f_k in zip(fake_b_pool, real_a_pool):
            loss, weight = src_loss(f_q, f_k, batch, only_weight=False, epoch=EPOCH)
            loss_src = loss_src + loss * LAMBDA_SRC
            weights.append(weight)
        loss_src = loss_src / len(NCE_LAYERS)
        loss_hdce = sum((hdce_loss(f_q, f_k, w, batch) * LAMBDA_HDCE).mean()
                        for f_q, f_k, w in zip(fake_b_pool, real_a_pool, weights)) / len(NCE_LAYERS)
        # Identity branch: weights only from SRC (no SRC term), then hDCE.
        weights_idt = [src_loss(f_q, f_k, batch, only_weight=True, epoch=EPOCH)[1]
                       for f_q, f_k in zip(idt_b_pool, real_b_pool)]
        loss_hdce_y = sum((hdce_loss(f_q, f_k, w, batch) * LAMBDA_HDCE).mean()
                          for f_q, f_k, w in zip(idt_b_pool, real_b_pool, weights_idt)) / len(NCE_LAYERS)
        terms = {"HDCE": loss_hdce, "HDCE_Y": loss_hdce_y, "SRC": loss_src}
        self.losses.update({name: value.detach() for name, value in terms.items()})
        return (loss_hdce + loss_hdce_y) * 0.5 + loss_src

    def data_dependent_initialize(self) -> None:
        """Official first-batch set-up: forward, both backward passes (creates F's MLPs), then F's optimiser."""
        self.forward()
        self.compute_d_loss().backward()
        self.compute_g_loss().backward()
        self.optimizer_f = torch.optim.Adam(self.net_f.parameters(), lr=LR, betas=BETAS)

    def setup_schedulers(self) -> None:
        """`lr_policy linear` schedulers (model.setup); stepped once per epoch, so not part of a step."""
        def rule(epoch):
            return 1.0 - max(0, epoch + 1 - N_EPOCHS) / float(N_EPOCHS_DECAY + 1)

        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=rule)
                           for opt in (self.optimizer_g, self.optimizer_d, self.optimizer_f)]

    def optimize_parameters(self) -> None:
        self.forward()
        # D step on the detached fake
        set_requires_grad(self.net_d, True)
        self.optimizer_d.zero_grad()
        self.loss_d = self.compute_d_loss()
        self.scaler_d.scale(self.loss_d).backward()
        self.scaler_d.step(self.optimizer_d)
        self.scaler_d.update()
        # G and F step with the updated D
        set_requires_grad(self.net_d, False)
        self.optimizer_g.zero_grad()
        self.optimizer_f.zero_grad()
        self.loss_g = self.compute_g_loss()
        self.scaler_g.scale(self.loss_g).backward()
        self.scaler_g.step(self.optimizer_g)
        self.scaler_g.step(self.optimizer_f)
        self.scaler_g.update()


def set_requires_grad(net: nn.Module, requires_grad: bool) -> None:
    for param in net.parameters():
        param.requires_grad = requires_grad


# === Benchmark ===


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="image side (the official crop is 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the first step")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = PyTorch default)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="autocast around the networks (the losses stay float32), as psr's train.mixed_precision")
    parser.add_argument("--amp-dtype", choices=("bfloat16", "float16"), default="bfloat16",
                        help="autocast dtype; float16 (CUDA only) adds dynamic loss scaling")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here (torch.cuda.is_available() is False)")
    if args.amp_dtype == "float16" and args.device == "cpu":
        parser.error("--amp-dtype float16 is for --device cuda; PyTorch's CPU autocast is bfloat16")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)

    amp_dtype = getattr(torch, args.amp_dtype) if args.mixed_precision else None
    model = CUTModel(args.device, amp_dtype)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    generator = torch.Generator().manual_seed(1)
    real_a = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1).to(args.device)
    real_b = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1).to(args.device)

    def synchronize() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    # The like-for-like mixed precision of bench/train_step.py --mixed-precision: autocast of every op it
    # covers (convs, matmuls) in the networks and the head; the losses leave it (CUTModel.compute_g_loss).
    autocast = model.autocast()
    autocast.__enter__()
    # First iteration as the official train.py: data_dependent_initialize, setup, then optimize_parameters.
    start = time.perf_counter()
    model.set_input(real_a, real_b)
    model.data_dependent_initialize()
    model.setup_schedulers()
    model.set_input(real_a, real_b)
    model.optimize_parameters()
    model.loss_g.item()
    synchronize()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.set_input(real_a, real_b)
        model.optimize_parameters()
        model.loss_g.item()  # as bench/train_step.py reads its losses
        synchronize()  # CUDA: the optimiser steps queued after the losses
        times.append(time.perf_counter() - start)
    autocast.__exit__(None, None, None)
    losses = {"D": model.loss_d.item(), "G": model.loss_g.item()}
    losses.update({name: float(value) for name, value in model.losses.items()})
    bad = [name for name, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise SystemExit(f"non-finite losses after the last step: {', '.join(bad)}")
    times.sort()
    result = {
        "framework": "pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "device": args.device, "size": args.size, "batch": args.batch, "steps": args.steps,
        "mixed_precision": args.mixed_precision, "amp_dtype": args.amp_dtype if args.mixed_precision else None,
        "first_step_s": round(first, 2),
        "median_s_per_step": round(times[len(times) // 2], 3) if times else None,
        "min_s_per_step": round(times[0], 3) if times else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_build_mb": round(rss_built),
        "peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20) if args.device == "cuda" else None,
        "last_losses": {name: round(value, 5) for name, value in losses.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
