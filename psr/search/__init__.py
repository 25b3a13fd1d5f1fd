"""Searches over sub-networks of a trained supernet (GAN compression, spec compression §6)."""

from psr.search.evolution import (
    EvolutionSearch,
    EvolutionSettings,
    Individual,
    SearchResult,
    config_key,
    run_search,
    sampling_weights,
)

__all__ = [
    "EvolutionSearch",
    "EvolutionSettings",
    "Individual",
    "SearchResult",
    "config_key",
    "run_search",
    "sampling_weights",
]
