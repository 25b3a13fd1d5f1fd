"""The multi-modal translator: a generator with its mapping network and style encoder (StarGAN v2).

`MultimodalTranslator` is what a `stargan2` run exports, evaluates and samples
with: the EMA copies of G, M and E. A translation takes a target domain and a
style, either from a latent code through M (latent-guided) or from a reference
image of that domain through E (reference-guided). The generator is fully
convolutional (any side divisible by 4); the style encoder sees references at
the training size.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="psr")
class MultimodalTranslator(keras.Model):
    """G + M + E.

    Args:
        generator: `call(images, styles)`.
        mapping: `call(latents, domains)` → styles.
        style_encoder: `call(references, domains)` → styles.
        latent_dim: size of the latent codes.
    """

    def __init__(self, generator: keras.Model, mapping: keras.Model, style_encoder: keras.Model,
                 latent_dim: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.mapping = mapping
        self.style_encoder = style_encoder
        self.latent_dim = int(latent_dim)
        # The three networks arrive built (all their weights exist): so is the translator.
        self.built = all(net.built for net in (generator, mapping, style_encoder))

    @property
    def num_domains(self) -> int:
        return int(self.mapping.num_domains)

    def translate_latent(self, images, domains, latents, training: bool = False):
        """`G(x, M(z, d))`: images `[N, H, W, 3]`, domains int `[N]`, latents `[N, latent_dim]`."""
        styles = self.mapping(latents, ops.cast(domains, "int32"), training=training)
        return self.generator(images, styles, training=training)

    def translate_reference(self, images, references, domains, training: bool = False):
        """`G(x, E(x_ref, d))`: references `[N, h, w, 3]` at the training size, of domains `[N]`."""
        styles = self.style_encoder(references, ops.cast(domains, "int32"), training=training)
        return self.generator(images, styles, training=training)

    def call(self, images, domains=None, latents=None, training: bool = False):
        batch = ops.shape(images)[0]
        if domains is None:
            domains = ops.zeros((batch,), dtype="int32")
        if latents is None:
            latents = ops.zeros((batch, self.latent_dim))
        return self.translate_latent(images, domains, latents, training=training)

    def sample_grid(self, sources: np.ndarray, references: np.ndarray, seed: int = 0,
                    codes_per_domain: int = 2) -> np.ndarray:
        """One image, floats in [-1, 1]:

        - latent part: a row per source: the source, then `codes_per_domain` latent translations into
          every domain (the same codes in every row);
        - reference part: a first row of the sources (after a blank), then a row per reference image:
          the reference, then every source in its style. Reference j is of domain j mod K.
        """
        sources = np.asarray(sources, np.float32)
        references = np.asarray(references, np.float32)
        n, k = len(sources), self.num_domains
        codes = np.random.RandomState(seed).standard_normal((codes_per_domain, self.latent_dim)).astype(np.float32)
        latent_rows = []
        for source in sources:
            cells = [source]
            batch = np.repeat(source[None], k * codes_per_domain, axis=0)
            domains = np.repeat(np.arange(k, dtype=np.int32), codes_per_domain)
            latents = np.tile(codes, (k, 1))
            cells += list(ops.convert_to_numpy(self.translate_latent(batch, domains, latents)))
            latent_rows.append(np.concatenate(cells, axis=1))
        blank = -np.ones_like(sources[0])
        reference_rows = [np.concatenate([blank] + list(sources), axis=1)]
        for j, reference in enumerate(references):
            refs = np.repeat(reference[None], n, axis=0)
            domains = np.full((n,), j % k, dtype=np.int32)
            fakes = ops.convert_to_numpy(self.translate_reference(sources, refs, domains))
            reference_rows.append(np.concatenate([reference] + list(fakes), axis=1))
        width = max(row.shape[1] for row in latent_rows + reference_rows)

        def pad(row):
            return np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)), constant_values=-1.0)

        return np.concatenate([pad(r) for r in latent_rows + reference_rows], axis=0)

    def get_config(self):
        # The networks are built from the run's configuration; only the scalar is listed.
        return {"latent_dim": self.latent_dim}


def draw_latents(count: int, latent_dim: int, seed: int) -> np.ndarray:
    """Reproducible latent codes `[count, latent_dim]` ~ N(0, I) for translation and evaluation."""
    return np.random.RandomState(seed).standard_normal((count, latent_dim)).astype(np.float32)


def domain_index(names: Sequence[str], name: str) -> int:
    """The index of domain `name` (names are the sorted training folders)."""
    from psr.errors import ConfigError

    if name in names:
        return list(names).index(name)
    if name.isdigit() and int(name) < len(names):
        return int(name)
    raise ConfigError(f"--domain {name!r} is not a domain of this model; choose one of {', '.join(names)}.")


__all__ = ["MultimodalTranslator", "domain_index", "draw_latents"]
