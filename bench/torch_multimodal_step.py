"""Seconds per iteration and peak memory of the official Hneg_SRC multimodal iteration (issue #13 reference).

    python bench/torch_multimodal_step.py --size 64 --steps 5            # PyTorch's default thread count
    python bench/torch_multimodal_step.py --size 64 --steps 5 --threads 2

A self-contained PyTorch re-statement of ONE training iteration of the official code (jcy132/Hneg_SRC,
Multimodal, `core/solver_hSRC.py` `train`, a fork of clovaai/stargan-v2), Seasons settings, written from
shared/spec/multimodal.md §1–§4, so that bench/multimodal_step.py (psr, Keras/TensorFlow) can be timed next
to it on the same machine:

- networks of spec §2: G with two strided down blocks, 4 ResBlks, 4 AdaIN ResBlks, two up blocks, no tanh;
  M with one head per domain; E and the multi-task D on the same trunk; F = one 2-layer MLP per feature
  layer; He-normal init (EMA copies are copies of the initialised nets, as psr does; spec §2.7);
- the official number of generator passes: G(x, s) runs the encoder inside every call, so each G update
  runs it five times (x_f, x_f2, x_rec, the features of x and of x_f; spec §9.16), and the features of x_f
  are computed with autograd recording and detached inside the losses, as the official code does;
- losses of spec §3: logistic adversarial + R1 on the reals, style, diversity (second output detached),
  self-reconstruction ("cyc"), SRC (JSD) and hDCE with 5 layers × 128 patches, averaged over layers;
- the update order of spec §4.1 (D latent, D reference, G/M/E/F latent, G reference, EMA, λ_ds decay), five
  Adams (β = (0, 0.99), lr 1e-4, M 1e-6) with coupled weight decay 1e-4 (PyTorch Adam `weight_decay`).

Three generalisations, identical to the official code wherever that code runs: the width after the first
conv is `--filters` (64, what the official rule 2^14 / side gives at the paper's side 256; the rule itself
would widen the nets as the side shrinks); the semantic features are the encoder maps at the bottleneck
resolution (side / 4; the official code keeps the maps whose side is exactly 64, i.e. it only runs at
256); the diagonal masks have the number of patches actually drawn (the official SRC uses eye(n_patch),
which fails when the bottleneck has fewer than 128 positions, i.e. for sides below 64).
Random images stand in for data (the data pipeline is not timed). Peak memory is the process's peak
resident set size (ru_maxrss) in a fresh process, which includes PyTorch itself. Nothing from psr or
TensorFlow is imported. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import time

import torch
from torch import nn
from torch.nn import functional as F

# Seasons settings (run_train.sh of jcy132/Hneg_SRC Multimodal; spec §1)
NUM_DOMAINS = 4
LATENT_DIM = 16
STYLE_DIM = 64
MAPPING_WIDTH = 512
MAX_WIDTH = 512
NUM_RES, NUM_ADAIN = 4, 4
N_PATCH = 128
HEAD_WIDTH = 256
TAU = 0.07
LAMBDA_REG, LAMBDA_STY, LAMBDA_CYC = 1.0, 1.0, 1.0
LAMBDA_DS, DS_ITER = 2.0, 100_000
LAMBDA_SRC, LAMBDA_DCE = 0.1, 1.0
GAMMA_START, GAMMA_END, TOTAL_ITERS = 50.0, 1.0, 100_000
LR, F_LR, BETAS, WEIGHT_DECAY = 1e-4, 1e-6, (0.0, 0.99), 1e-4
EMA_BETA = 0.999


# === Networks (spec §2) ===


def leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class PreActResBlock(nn.Module):
    """(shortcut + residual) / √2; residual = [IN] LReLU conv3 [pool] [IN] LReLU conv3 (spec §2.1 ResBlk)."""

    def __init__(self, c_in: int, c_out: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.normalize, self.downsample = normalize, downsample
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(c_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(c_in, affine=True)
        self.shortcut_conv = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut_conv(x) if self.shortcut_conv is not None else x
        if self.downsample:
            shortcut = F.avg_pool2d(shortcut, 2)
        h = self.norm1(x) if self.normalize else x
        h = self.conv1(leaky(h))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        h = self.norm2(h) if self.normalize else h
        h = self.conv2(leaky(h))
        return (shortcut + h) / math.sqrt(2)


class DownBlock(nn.Module):
    """IN(affine) → LReLU → conv4×4 stride 2 pad 1; not residual."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(c_in, affine=True)
        self.conv = nn.Conv2d(c_in, c_out, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(leaky(self.norm(x)))


class UpBlock(nn.Module):
    """nearest ×2 → IN(affine) → LReLU → conv3×3; ignores the style (the code's up ConvBlk)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(c_in, affine=True)
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(leaky(self.norm(F.interpolate(x, scale_factor=2, mode="nearest"))))


class AdaIN(nn.Module):
    """(1 + γ)·IN(x) + β with [γ, β] = Linear(s)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(STYLE_DIM, 2 * channels)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdaINResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.norm2 = AdaIN(channels), AdaIN(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.conv1(leaky(self.norm1(x, s)))
        h = self.conv2(leaky(self.norm2(h, s)))
        return (h + x) / math.sqrt(2)


class Generator(nn.Module):
    """G(x, s) of spec §2.2; `features=True` runs the encoder only and returns its bottleneck maps f₁…f₅."""

    def __init__(self, filters: int):
        super().__init__()
        self.from_rgb = nn.Conv2d(3, filters, 3, 1, 1)
        widths = [filters, min(2 * filters, MAX_WIDTH), min(4 * filters, MAX_WIDTH)]
        self.down = nn.ModuleList(DownBlock(widths[i], widths[i + 1]) for i in range(2))
        self.res = nn.ModuleList(PreActResBlock(widths[2], widths[2], normalize=True) for _ in range(NUM_RES))
        self.adain = nn.ModuleList(AdaINResBlock(widths[2]) for _ in range(NUM_ADAIN))
        self.up = nn.ModuleList(UpBlock(widths[i + 1], widths[i]) for i in (1, 0))
        self.to_rgb_norm = nn.InstanceNorm2d(filters, affine=True)
        self.to_rgb_conv = nn.Conv2d(filters, 3, 1)

    def forward(self, x: torch.Tensor, s: torch.Tensor | None, features: bool = False):
        # As the official forward: every call starts from the image, so the encoder runs in every call.
        x = self.from_rgb(x)
        for block in self.down:
            x = block(x)
        maps = [x]
        for block in self.res:
            x = block(x)
            maps.append(x)
        if features:
            return maps
        for block in self.adain:
            x = block(x, s)
        for block in self.up:
            x = block(x)
        return self.to_rgb_conv(leaky(self.to_rgb_norm(x)))


def select_domain(per_domain: list[torch.Tensor], domains: torch.Tensor) -> torch.Tensor:
    stacked = torch.stack(per_domain, dim=1)  # [B, K, ...]
    return stacked[torch.arange(domains.shape[0]), domains]


class MappingNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        trunk = [nn.Linear(LATENT_DIM, MAPPING_WIDTH), nn.ReLU()]
        for _ in range(3):
            trunk += [nn.Linear(MAPPING_WIDTH, MAPPING_WIDTH), nn.ReLU()]
        self.shared = nn.Sequential(*trunk)
        self.heads = nn.ModuleList()
        for _ in range(NUM_DOMAINS):
            head = []
            for _ in range(3):
                head += [nn.Linear(MAPPING_WIDTH, MAPPING_WIDTH), nn.ReLU()]
            self.heads.append(nn.Sequential(*head, nn.Linear(MAPPING_WIDTH, STYLE_DIM)))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        return select_domain([head(h) for head in self.heads], y)


def domain_trunk(size: int, filters: int) -> tuple[nn.Sequential, int]:
    """conv3×3, log2(size) − 2 down ResBlks to 4×4, LReLU, conv4×4 valid, LReLU (spec §2.5)."""
    layers, channels = [nn.Conv2d(3, filters, 3, 1, 1)], filters
    for _ in range(int(math.log2(size)) - 2):
        wider = min(2 * channels, MAX_WIDTH)
        layers.append(PreActResBlock(channels, wider, downsample=True))
        channels = wider
    layers += [nn.LeakyReLU(0.2), nn.Conv2d(channels, channels, 4, 1, 0), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers), channels


class StyleEncoder(nn.Module):
    def __init__(self, size: int, filters: int):
        super().__init__()
        self.trunk, channels = domain_trunk(size, filters)
        self.heads = nn.ModuleList(nn.Linear(channels, STYLE_DIM) for _ in range(NUM_DOMAINS))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x).flatten(1)
        return select_domain([head(h) for head in self.heads], y)


class Discriminator(nn.Module):
    def __init__(self, size: int, filters: int):
        super().__init__()
        self.trunk, channels = domain_trunk(size, filters)
        self.logits = nn.Conv2d(channels, NUM_DOMAINS, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.logits(self.trunk(x)).flatten(1)  # [B, K]
        return out[torch.arange(y.shape[0]), y]


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """The official `Normalize(2)`: x / (||x||_2 + 1e-7) along dim 1."""
    return x / (x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


class PatchSampleF(nn.Module):
    """Projection head F (spec §2.3): per layer Linear → ReLU → Linear on sampled positions, L2-normalised."""

    def __init__(self, channels: int, num_layers: int = 5):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, HEAD_WIDTH), nn.ReLU(), nn.Linear(HEAD_WIDTH, HEAD_WIDTH))
            for _ in range(num_layers)
        )

    def forward(self, maps: list[torch.Tensor], patch_ids: list[torch.Tensor] | None = None):
        pooled, ids = [], []
        for index, feat in enumerate(maps):
            flat = feat.permute(0, 2, 3, 1).flatten(1, 2)  # [B, H*W, C], row-major positions
            if patch_ids is None:
                # One permutation per layer and call, shared by every image of the batch.
                patch_id = torch.randperm(flat.shape[1])[: min(N_PATCH, flat.shape[1])]
            else:
                patch_id = patch_ids[index]
            pooled.append(l2_normalize(self.mlps[index](flat[:, patch_id, :].flatten(0, 1))))
            ids.append(patch_id)
        return pooled, ids


def he_init(module: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU gain) weights and zero biases for every conv and linear layer (§2.7)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


# === Losses (spec §3) ===


def adv_loss(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def r1_penalty(scores: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    grad = torch.autograd.grad(scores.sum(), images, create_graph=True)[0]
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def src_and_weights(feat_q: torch.Tensor, feat_k: torch.Tensor, batch: int, iteration: int):
    """λ_SRC·JSD of the relation softmaxes (summed over the batch) and the detached hard-negative weights."""
    feat_k = l2_normalize(feat_k.detach()).view(batch, -1, feat_k.shape[1])
    feat_q = l2_normalize(feat_q).view(batch, -1, feat_q.shape[1])
    spatial_q = torch.bmm(feat_q, feat_q.transpose(2, 1))
    spatial_k = torch.bmm(feat_k, feat_k.transpose(2, 1))
    gamma = GAMMA_START + (GAMMA_END - GAMMA_START) * iteration / TOTAL_ITERS
    seed = spatial_k.detach().masked_fill(torch.eye(spatial_k.shape[1], dtype=torch.bool)[None], -10.0)
    weight = torch.softmax(seed / gamma, dim=2)
    weight = weight / weight.max(dim=2, keepdim=True).values
    p_q = torch.softmax(spatial_q, dim=1)
    p_k = torch.softmax(spatial_k, dim=1).detach()
    log_m = torch.log(0.5 * (p_q + p_k))
    jsd = 0.5 * ((p_q * (torch.log(p_q) - log_m)).sum() + (p_k * (torch.log(p_k) - log_m)).sum())
    return LAMBDA_SRC * jsd, weight


def hdce_loss(feat_q: torch.Tensor, feat_k: torch.Tensor, weight: torch.Tensor, batch: int) -> torch.Tensor:
    """λ_DCE · [mean exp(v − sg v) − 1 + sg CE]: value = InfoNCE CE, gradient = decoupled loss (§3.5)."""
    rows, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = (feat_q * feat_k).sum(1, keepdim=True)
    q, k = feat_q.view(batch, -1, dim), feat_k.view(batch, -1, dim)
    patches = q.shape[1]
    l_neg = (torch.bmm(q, k.transpose(2, 1)) * weight).masked_fill(
        torch.eye(patches, dtype=torch.bool)[None], -10.0).view(-1, patches)
    v = torch.logsumexp((l_neg - l_pos) / TAU, dim=1)
    cross_entropy = F.cross_entropy(torch.cat((l_pos, l_neg), dim=1) / TAU,
                                    torch.zeros(rows, dtype=torch.long), reduction="none")
    return LAMBDA_DCE * (torch.exp(v - v.detach()).mean() - 1 + cross_entropy.detach())


# === The iteration (solver_hSRC.py: compute_d_loss, compute_g_loss, train) ===


class Solver:
    def __init__(self, size: int, filters: int):
        self.generator = Generator(filters)
        self.mapping = MappingNetwork()
        self.style_encoder = StyleEncoder(size, filters)
        self.discriminator = Discriminator(size, filters)
        self.head = PatchSampleF(min(4 * filters, MAX_WIDTH))
        for net in self.nets().values():
            net.apply(he_init)
        self.ema = {name: copy.deepcopy(getattr(self, name)) for name in ("generator", "mapping", "style_encoder")}
        self.optimizers = {
            name: torch.optim.Adam(net.parameters(), lr=F_LR if name == "mapping" else LR, betas=BETAS,
                                   weight_decay=WEIGHT_DECAY)
            for name, net in self.nets().items()
        }
        self.lambda_ds = LAMBDA_DS
        self.iteration = 0

    def nets(self) -> dict:
        return {"generator": self.generator, "mapping": self.mapping, "style_encoder": self.style_encoder,
                "discriminator": self.discriminator, "head": self.head}

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()

    def d_loss(self, x, y_org, y_trg, z=None, x_ref=None):
        x = x.requires_grad_()
        real = self.discriminator(x, y_org)
        loss_real, loss_reg = adv_loss(real, 1.0), r1_penalty(real, x)
        with torch.no_grad():
            s = self.mapping(z, y_trg) if z is not None else self.style_encoder(x_ref, y_trg)
            fake = self.generator(x, s)
        loss_fake = adv_loss(self.discriminator(fake, y_trg), 0.0)
        return loss_real + loss_fake + LAMBDA_REG * loss_reg, {"real": loss_real, "fake": loss_fake, "reg": loss_reg}

    def g_loss(self, x, y_org, y_trg, first, second, latent: bool):
        style = self.mapping if latent else self.style_encoder
        batch = x.shape[0]
        s = style(first, y_trg)
        fake = self.generator(x, s)                                    # encoder pass 1
        loss_adv = adv_loss(self.discriminator(fake, y_trg), 1.0)
        loss_sty = (self.style_encoder(fake, y_trg) - s).abs().mean()
        fake2 = self.generator(x, style(second, y_trg)).detach()       # encoder pass 2
        loss_ds = (fake - fake2).abs().mean()
        reconstruction = self.generator(x, self.style_encoder(x, y_org))  # pass 3: the code's self-reconstruction
        feats_real = self.generator(x, None, features=True)            # pass 4 (queries, with gradient)
        feats_fake = self.generator(fake, None, features=True)         # pass 5 (keys; detached in the losses)
        queries, patch_ids = self.head(feats_real)
        keys, _ = self.head(feats_fake, patch_ids)
        loss_src, loss_patch = 0.0, 0.0
        for q, k in zip(queries, keys):
            src, weight = src_and_weights(q, k, batch, self.iteration)
            loss_src = loss_src + src
            loss_patch = loss_patch + hdce_loss(q, k, weight, batch).mean()
        loss_src, loss_patch = loss_src / len(queries), loss_patch / len(queries)
        loss_cyc = (reconstruction - x).abs().mean()
        loss = (loss_adv + LAMBDA_STY * loss_sty - self.lambda_ds * loss_ds + loss_src + loss_patch
                + LAMBDA_CYC * loss_cyc)
        return loss, {"adv": loss_adv, "sty": loss_sty, "ds": loss_ds, "cyc": loss_cyc, "src": loss_src,
                      "patch": loss_patch}

    def step(self, x, y_org, x_ref, x_ref2, y_trg) -> dict:
        batch = x.shape[0]
        z1, z2 = torch.randn(batch, LATENT_DIM), torch.randn(batch, LATENT_DIM)
        logs = {}
        for mode, kwargs in (("latent", {"z": z1}), ("ref", {"x_ref": x_ref})):
            loss, terms = self.d_loss(x, y_org, y_trg, **kwargs)
            self.zero_grad()
            loss.backward()
            self.optimizers["discriminator"].step()
            logs.update({f"D/{mode}_{name}": value for name, value in terms.items()})
        loss, terms = self.g_loss(x, y_org, y_trg, z1, z2, latent=True)
        self.zero_grad()
        loss.backward()
        for name in ("generator", "mapping", "style_encoder", "head"):
            self.optimizers[name].step()
        logs.update({f"G/latent_{name}": value for name, value in terms.items()})
        loss, terms = self.g_loss(x, y_org, y_trg, x_ref, x_ref2, latent=False)
        self.zero_grad()
        loss.backward()
        self.optimizers["generator"].step()
        logs.update({f"G/ref_{name}": value for name, value in terms.items()})
        with torch.no_grad():
            for name, ema in self.ema.items():
                for param, shadow in zip(getattr(self, name).parameters(), ema.parameters()):
                    shadow.lerp_(param, 1 - EMA_BETA)  # shadow ← β·shadow + (1 − β)·param
        if self.lambda_ds > 0:
            self.lambda_ds -= LAMBDA_DS / DS_ITER
        self.iteration += 1
        return {name: float(value.detach()) for name, value in logs.items()}


# === Benchmark ===


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side, a power of two (the paper's is 256)")
    parser.add_argument("--steps", type=int, default=5, help="timed iterations after the first one")
    parser.add_argument("--batch", type=int, default=2, help="images per batch (the paper's is 8)")
    parser.add_argument("--filters", type=int, default=64, help="width after the first conv of G, E and D")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = PyTorch default)")
    args = parser.parse_args()
    if args.size < 16 or args.size & (args.size - 1):
        raise SystemExit(f"--size {args.size}: the discriminator needs a power of two >= 16; pass e.g. --size 64.")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    solver = Solver(args.size, args.filters)
    rss_built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    generator = torch.Generator().manual_seed(1)
    x, x_ref, x_ref2 = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1
                        for _ in range(3))
    y_org = torch.arange(args.batch) % NUM_DOMAINS
    y_trg = (torch.arange(args.batch) + 1) % NUM_DOMAINS

    start = time.perf_counter()
    logs = solver.step(x, y_org, x_ref, x_ref2, y_trg)
    first = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        logs = solver.step(x, y_org, x_ref, x_ref2, y_trg)  # CPU ops are synchronous
        times.append(time.perf_counter() - start)
    bad = [name for name, value in logs.items() if not math.isfinite(value)]
    if bad:
        raise SystemExit(f"non-finite losses after the last iteration: {', '.join(bad)}")
    times.sort()
    result = {
        "framework": "pytorch", "torch_version": torch.__version__, "threads": torch.get_num_threads(),
        "size": args.size, "batch": args.batch, "steps": args.steps, "filters": args.filters,
        "num_domains": NUM_DOMAINS,
        "first_step_s": round(first, 2),
        "median_s_per_step": round(times[len(times) // 2], 3) if times else None,
        "min_s_per_step": round(times[0], 3) if times else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rss_after_build_mb": round(rss_built),
        "last_losses": {name: round(value, 5) for name, value in logs.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
