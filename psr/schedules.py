"""Schedules: the Γ curriculum of hDCE, the linear LR decay, and their time axis.

Time is counted in **iterations** (the trainer's step counter); an epoch is a
conversion. The official CUT code keys its curves on the 1-based epoch and
keeps them constant within an epoch (spec `single_modal.md` §3 and §5);
StarGAN v2 keys them on the iteration. `StepSchedule` reads a curve of the
(possibly fractional) 1-based epoch at an iteration, either way. The trainer
writes the value into a `keras.Variable` that the compiled step reads (a Python
float would be frozen at trace time), so changing it never retraces, and
because the value depends on the step counter alone a resumed run sees exactly
the values of an uninterrupted one. `LinearDecay` is a regular
`LearningRateSchedule` of the optimizer's iteration count.
`psr.callbacks.GammaScheduler` does the same for plain Keras models (a
callback that counts epochs itself).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from psr.registry import GAMMA_MODES, SCHEDULE_UNITS


def _is_python_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _require(condition, message, **received):
    if not condition:
        shown = ", ".join(f"{key}={value!r}" for key, value in received.items())
        raise ValueError(f"{message} Received: {shown}")


# === Γ curriculum ===


@keras.saving.register_keras_serializable(package="psr")
class GammaCurriculum:
    """Γ (`weight_temperature`, the official `HDCE_gamma`) as a function of the epoch.

    Stateless: `curriculum(epoch)` takes the **1-based** epoch (as the official
    code), a Python number (returns a float) or a tensor (returns a float32
    tensor). Fractional epochs are allowed (see `psr.callbacks.GammaScheduler(per_step=True)`).

    Args:
        start: Γ_o (`HDCE_gamma`), > 0.
        end: Γ_min (`HDCE_gamma_min`), > 0; reached at `epoch == total_epochs`.
        total_epochs: T = `n_epochs + n_epochs_decay`, ≥ 1.
        step_epoch: `step_gamma_epoch` or None. If set, Γ = `step_value` for
            every epoch > `step_epoch` (Cityscapes: 200).
        step_value: Γ after the step (the official code hard-codes 1).
        mode: `"linear"` (the curriculum) or `"fixed"` (Γ = `start` always;
            supplement Table 7's fixed γ = 0.02 / 0.1 / 1 ⇔ Γ = 50 / 10 / 1).

    Formula:
    ```
    linear: Γ(e) = start + (end − start) · min(e, T) / T;  Γ(e) = step_value if e > step_epoch
    fixed:  Γ(e) = start
    ```
    The clamp at T only matters past the last epoch, which the official code
    never reaches; it keeps Γ from crossing zero if training is extended.

    Example (horse→zebra): `GammaCurriculum(50, 10, 400)` gives
    Γ(1) = 49.9, Γ(200) = 30, Γ(400) = 10.
    """

    def __init__(
        self,
        start: float = 50.0,
        end: float = 10.0,
        total_epochs: int = 400,
        step_epoch: int | None = None,
        step_value: float = 1.0,
        mode: str = "linear",
    ):
        _require(mode in GAMMA_MODES, f"Argument `mode` must be one of {GAMMA_MODES}.", mode=mode)
        _require(_is_python_number(start) and start > 0, "Argument `start` must be a number > 0.", start=start)
        _require(_is_python_number(end) and end > 0, "Argument `end` must be a number > 0.", end=end)
        _require(
            isinstance(total_epochs, numbers.Integral) and total_epochs >= 1,
            "Argument `total_epochs` must be an integer >= 1.",
            total_epochs=total_epochs,
        )
        _require(
            step_epoch is None or (isinstance(step_epoch, numbers.Integral) and step_epoch >= 0),
            "Argument `step_epoch` must be None or an integer >= 0.",
            step_epoch=step_epoch,
        )
        _require(
            _is_python_number(step_value) and step_value > 0,
            "Argument `step_value` must be a number > 0.",
            step_value=step_value,
        )
        self.start = float(start)
        self.end = float(end)
        self.total_epochs = int(total_epochs)
        self.step_epoch = None if step_epoch is None else int(step_epoch)
        self.step_value = float(step_value)
        self.mode = mode

    def __call__(self, epoch):
        """Γ at the 1-based `epoch` (float for a number, float32 tensor for a tensor)."""
        if _is_python_number(epoch):
            if self.mode == "fixed":
                return self.start
            if self.step_epoch is not None and epoch > self.step_epoch:
                return self.step_value
            progress = min(float(epoch), self.total_epochs) / self.total_epochs
            return self.start + (self.end - self.start) * progress
        epoch = ops.cast(epoch, "float32")
        if self.mode == "fixed":
            return ops.full_like(epoch, self.start)
        progress = ops.minimum(epoch, float(self.total_epochs)) / float(self.total_epochs)
        value = self.start + (self.end - self.start) * progress
        if self.step_epoch is not None:
            value = ops.where(epoch > float(self.step_epoch), self.step_value, value)
        return value

    def gamma(self, epoch):
        """The paper's γ = 1/Γ at the 1-based `epoch`."""
        return 1.0 / self(epoch)

    def get_config(self):
        return {
            "start": self.start,
            "end": self.end,
            "total_epochs": self.total_epochs,
            "step_epoch": self.step_epoch,
            "step_value": self.step_value,
            "mode": self.mode,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# === Time axis ===


@keras.saving.register_keras_serializable(package="psr")
class StepSchedule:
    """A curve of the 1-based epoch (`GammaCurriculum`, ...) read at an iteration.

    `schedule(step)` takes the number of completed iterations (the 0-based index of the iteration about to
    run) and returns the curve at
    - unit "epoch": `step // steps_per_epoch + 1`, constant within an epoch (official CUT);
    - unit "step": `(step + 1) / steps_per_epoch`, a new value every iteration along the same curve, equal
      to the per-epoch value on each epoch's last iteration (official StarGAN v2 schedules per iteration).

    Args:
        curve: callable of the 1-based (fractional) epoch.
        steps_per_epoch: iterations per epoch (≥ 1).
        unit: "epoch" or "step".
    """

    def __init__(self, curve, steps_per_epoch: int, unit: str = "epoch"):
        _require(unit in SCHEDULE_UNITS, f"Argument `unit` must be one of {SCHEDULE_UNITS}.", unit=unit)
        _require(
            isinstance(steps_per_epoch, numbers.Integral) and steps_per_epoch >= 1,
            "Argument `steps_per_epoch` must be an integer >= 1.",
            steps_per_epoch=steps_per_epoch,
        )
        self.curve = curve
        self.steps_per_epoch = int(steps_per_epoch)
        self.unit = unit

    def epoch(self, step: int) -> float:
        if self.unit == "epoch":
            return step // self.steps_per_epoch + 1
        return (step + 1) / self.steps_per_epoch

    def __call__(self, step: int) -> float:
        return float(self.curve(self.epoch(int(step))))

    def get_config(self):
        return {
            "curve": keras.saving.serialize_keras_object(self.curve),
            "steps_per_epoch": self.steps_per_epoch,
            "unit": self.unit,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["curve"] = keras.saving.deserialize_keras_object(config["curve"])
        return cls(**config)


# === Learning rate ===


@keras.saving.register_keras_serializable(package="psr")
class LinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """CUT's `lr_policy linear`: constant for `n_epochs`, then linear to ~0.

    `step` is the optimizer's 0-based iteration count; the epoch (1-based) is
    derived from it, so the rate changes once per epoch as in the official
    scheduler (which steps at epoch end). Built from keras.ops, so it works
    inside `tf.function` and XLA.

    Args:
        initial_learning_rate: the base rate (2e-4 for CUT runs).
        n_epochs: epochs at the base rate.
        n_epochs_decay: epochs of linear decay after that.
        steps_per_epoch: optimizer steps per epoch (≥ 1).

    Formula:
    ```
    e = step // steps_per_epoch + 1
    lr = initial_learning_rate · max(0, 1 − max(0, e − n_epochs) / (n_epochs_decay + 1))
    ```
    (200 + 200 epochs: factor 1 up to epoch 200, then 200/201 … 1/201; the
    outer max only keeps the rate from going negative past the last epoch.)
    """

    def __init__(self, initial_learning_rate, n_epochs, n_epochs_decay, steps_per_epoch):
        _require(
            _is_python_number(initial_learning_rate) and initial_learning_rate >= 0,
            "Argument `initial_learning_rate` must be a number >= 0.",
            initial_learning_rate=initial_learning_rate,
        )
        for name, value, minimum in (
            ("n_epochs", n_epochs, 0),
            ("n_epochs_decay", n_epochs_decay, 0),
            ("steps_per_epoch", steps_per_epoch, 1),
        ):
            _require(
                isinstance(value, numbers.Integral) and value >= minimum,
                f"Argument `{name}` must be an integer >= {minimum}.",
                **{name: value},
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.n_epochs = int(n_epochs)
        self.n_epochs_decay = int(n_epochs_decay)
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        step = ops.convert_to_tensor(step)
        epoch = ops.cast(ops.floor_divide(step, ops.cast(self.steps_per_epoch, step.dtype)), "float32") + 1.0
        decayed_epochs = ops.maximum(epoch - float(self.n_epochs), 0.0)
        # (D + 1 − d) / (D + 1) rather than 1 − d / (D + 1): the numerator is an
        # exact integer, so float32 keeps full precision near the end (1/201).
        remaining = ops.maximum(float(self.n_epochs_decay + 1) - decayed_epochs, 0.0)
        return self.initial_learning_rate * (remaining / float(self.n_epochs_decay + 1))

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "n_epochs": self.n_epochs,
            "n_epochs_decay": self.n_epochs_decay,
            "steps_per_epoch": self.steps_per_epoch,
        }


__all__ = ["GAMMA_MODES", "GammaCurriculum", "LinearDecay", "StepSchedule"]
