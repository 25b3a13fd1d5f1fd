"""Evaluation records: what every evaluation writes (eval.jsonl lines, TensorBoard scalars, extractor tags)."""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf


def extractor_record(extractor) -> dict:
    """The extractor's tags in eval.json / eval.jsonl: its name and its cache key (weights hash)."""
    from psr.metrics.extractors import extractor_name

    if extractor is None:  # only paired metrics: no features were extracted
        return {}
    return {"features": extractor_name(extractor), "features_key": str(extractor.cache_key)}


def append_record(path: Path, record: dict) -> None:
    """One JSON line appended to an evaluation history (`eval.jsonl`)."""
    from psr.rundir import append_line

    append_line(path, json.dumps(record))


def write_scalars(log_dir: Path, step: int, values: dict, prefix: str = "eval/") -> None:
    """Scalars `prefix + name` at `step` into a TensorBoard folder."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default(step=step):
        for name, value in values.items():
            tf.summary.scalar(prefix + name, float(value))
    writer.flush()
    writer.close()


__all__ = ["append_record", "extractor_record", "write_scalars"]
