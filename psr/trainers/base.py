"""The trainer contract: what the run machinery may rely on, for every method.

Callbacks, checkpoints, export, evaluation and sample grids talk to a trainer
only through these members, never through attribute names of one method
(`generator`, `g_optimizer`, ...). A method with EMA networks and five
optimisers, or one that exports a chosen sub-network, implements the same
members and gets logging, resume, export and evaluation unchanged.

Contract (all required unless marked):
- `step_counter`: an integer variable, the number of completed training
  iterations (one per batch). Schedules, TensorBoard steps and resume read it.
- `named_optimizers()`: `{name: optimizer}`, the first one's learning rate is
  logged as `learning_rate`, every one's as `learning_rate/<name>`.
- `inference_network()`: the Keras network that export, translate and
  evaluation run (`images [N, H, W, 3] in [-1, 1] -> images`); an EMA copy or
  a sub-network for later methods.
- `schedules()`: `ScheduledValue`s, the variables that change during training
  (Γ, λ_ds, ...), each a function of the step counter.
- `logged_terms`: names of the loss terms `train_step` returns.
- `sample_grid(sources, targets)` (has a default): the image grid of a fixed
  batch, floats in [-1, 1].
- `build_all()`: creates every variable before `fit` or a restore, and leaves the trainer built (call it
  once on a small batch).
- `check_finite()`: whether every variable holds finite values (checkpoints are
  never written otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import keras
import numpy as np
from keras import ops


@dataclass
class ScheduledValue:
    """A variable that the `ScheduleDriver` callback sets before every step to `schedule(step)`.

    Attributes:
        variable: the `keras.Variable` the compiled step reads (changing it never retraces).
        schedule: completed iterations (int) → value.
        log_names: `{log name: transform}` written into the epoch logs (e.g. Γ and γ = 1/Γ).
    """

    variable: keras.Variable
    schedule: Callable[[int], float]
    log_names: Optional[dict] = None

    def logs(self) -> dict:
        value = float(ops.convert_to_numpy(self.variable))
        names = self.log_names or {self.variable.name: None}
        return {name: (transform(value) if transform else value) for name, transform in names.items()}


def translation_grid(sources: np.ndarray, targets: np.ndarray, translate: Callable) -> np.ndarray:
    """Rows of input | translation | target-domain sample | translation of that sample, floats in [-1, 1]."""
    fake = ops.convert_to_numpy(translate(sources))
    identity = ops.convert_to_numpy(translate(targets))
    rows = [np.concatenate(list(cols), axis=1) for cols in zip(sources, fake, targets, identity)]
    return np.concatenate(rows, axis=0)


class Trainer(keras.Model):
    """Base class of psr trainers (a `keras.Model` with a custom `train_step`)."""

    logged_terms: tuple = ()

    @property
    def step_counter(self) -> keras.Variable:
        raise NotImplementedError(f"{type(self).__name__} must define `step_counter`.")

    def named_optimizers(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define `named_optimizers()`.")

    def inference_network(self) -> keras.Model:
        raise NotImplementedError(f"{type(self).__name__} must define `inference_network()`.")

    def schedules(self) -> list:
        return []

    def build_all(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define `build_all()`.")

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a distributed model symbolically at the start of `fit` by reducing one data batch
        # across replicas; under MultiWorkerMirroredStrategy that reduction fails for a tuple of inputs
        # (Keras 3.15: PerReplica values reach `convert_to_tensor`). psr trainers create every variable in
        # `build_all()` before `fit`, so there is nothing left to build.
        if self.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @staticmethod
    def step_outputs(logs: dict) -> dict:
        """What `train_step` returns. Keras 3.15 reduces each output across workers with
        `strategy.reduce("MEAN", value, axis=0)` under MultiWorkerMirroredStrategy, which needs rank ≥ 1,
        so there scalars travel as `[1]` and arrive as the scalar mean."""
        import tensorflow as tf

        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            return {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    # === Defaults built on the contract ===

    @property
    def completed_steps(self) -> int:
        return int(ops.convert_to_numpy(self.step_counter))

    def learning_rates(self) -> dict:
        """`{name: current learning rate}` of every optimiser (schedules evaluated at their step)."""
        rates = {}
        for name, optimizer in self.named_optimizers().items():
            rates[name] = float(ops.convert_to_numpy(optimizer.learning_rate))
        return rates

    def translate(self, images):
        return self.inference_network()(images, training=False)

    def sample_grid(self, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Rows of input | translation | target-domain sample | translation of the target sample."""
        return translation_grid(sources, targets, self.translate)

    def non_finite_variables(self) -> list[str]:
        """Paths of variables holding NaN or ±inf (weights, optimiser slots, schedule variables)."""
        bad = []
        for variable in self.variables + [v for o in self.named_optimizers().values() for v in o.variables]:
            value = ops.convert_to_numpy(variable)
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                bad.append(getattr(variable, "path", variable.name))
        return bad


class AdversarialHeadTrainer(Trainer):
    """The contract shared by trainers with three Adams (generator side, D, projection head) and a Γ variable
    (CUT / SinCUT, compression): subclasses set `weight_temperature`, `gamma_schedule` and `trackers`."""

    weight_temperature: keras.Variable
    gamma_schedule: Optional[Callable[[int], float]] = None
    trackers: dict

    def compile(self, g_optimizer, d_optimizer, head_optimizer, jit_compile: bool = False, **kwargs):
        """Wires the three optimisers: generator side, discriminator, projection head."""
        super().compile(optimizer=None, jit_compile=jit_compile, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.head_optimizer = head_optimizer

    def build_optimizer_slots(self, generator_variables: list) -> None:
        """Creates the optimisers' slots (after the networks are built), so a checkpoint restores them."""
        if getattr(self, "g_optimizer", None) is not None:
            self.g_optimizer.build(generator_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.head_optimizer.build(self.head.trainable_variables)

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def step_counter(self) -> keras.Variable:
        # One generator update per iteration: its optimiser counts the completed iterations.
        return self.g_optimizer.iterations

    def named_optimizers(self) -> dict:
        return {"generator": self.g_optimizer, "discriminator": self.d_optimizer, "head": self.head_optimizer}

    def schedules(self) -> list:
        if self.gamma_schedule is None:
            return []
        return [ScheduledValue(self.weight_temperature, self.gamma_schedule,
                               {"Gamma": None, "gamma": lambda value: 1.0 / value})]


__all__ = ["AdversarialHeadTrainer", "ScheduledValue", "Trainer", "translation_grid"]
