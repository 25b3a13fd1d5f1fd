"""Callbacks: the official decay-epoch crop switch, learning-rate logging, sample grids."""

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from psr.callbacks import CropJitterSwitch, LearningRateLogger, SampleGrid, StepTimer
from psr.schedules import LinearDecay
from psr.rundir import RunDir
from psr.trainers.base import Trainer


def test_crop_jitter_is_off_in_decay_epochs_only():
    jitter = tf.Variable(True)
    switch = CropJitterSwitch(jitter, n_epochs=2)
    seen = []
    for epoch in range(4):  # Keras epochs 0..3 = official epochs 1..4; decay starts at 3
        switch.on_epoch_begin(epoch)
        seen.append(bool(jitter.numpy()))
    assert seen == [True, True, False, False]
    keep = CropJitterSwitch(jitter, n_epochs=2, jitter_in_decay_epochs=True)
    keep.on_epoch_begin(3)
    assert bool(jitter.numpy())


def test_learning_rate_is_the_one_used_during_the_epoch():
    schedule = LinearDecay(initial_learning_rate=1.0, n_epochs=1, n_epochs_decay=1, steps_per_epoch=2)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.build([keras.Variable(0.0)])

    class Model(Trainer):
        def named_optimizers(self):
            return {"generator": optimizer}

    logger = LearningRateLogger()
    logger.set_model(Model())
    logs = {}
    optimizer.iterations.assign(2)  # start of official epoch 2: factor 1 − 1/2
    logger.on_epoch_begin(1)
    optimizer.iterations.assign(4)  # by the epoch's end the counter points into epoch 3
    logger.on_epoch_end(1, logs)
    assert logs["learning_rate"] == 0.5


def test_sample_grid_rows_are_input_translation_target_identity(tmp_path):
    real_a = np.full((2, 4, 4, 3), -1.0, np.float32)
    real_b = np.full((2, 4, 4, 3), 1.0, np.float32)
    grid = SampleGrid(real_a, real_b, RunDir(tmp_path), translate=lambda x: x * 0.0)
    path = grid.write(step=3)
    image = np.asarray(Image.open(path))
    assert path == tmp_path / "samples" / "epoch_0003.png" and image.shape == (8, 16, 3)
    # Columns: input (−1 → 0), translation (0 → 127), target (1 → 255), identity G(y) (0 → 127).
    assert [int(image[0, c * 4, 0]) for c in range(4)] == [0, 127, 255, 127]
    assert any((tmp_path / "tensorboard" / "images").glob("events.*"))


def test_step_timer_reports_seconds_per_step():
    timer = StepTimer()
    logs = {}
    timer.on_epoch_begin(0)
    for batch in range(3):
        timer.on_train_batch_end(batch)
    timer.on_epoch_end(0, logs)
    assert 0 <= logs["step_time"] < 1


def test_checkpoint_saver_saves_by_steps_by_wall_clock_and_never_on_an_epoch_boundary_step():
    from psr.callbacks import CheckpointSaver

    class Trainer:
        completed_steps = 0

    class State:
        steps_per_epoch = 10
        trainer = Trainer()

        def __init__(self):
            self.saves = []

        def save(self, snapshot=False):
            self.saves.append((self.trainer.completed_steps, snapshot))

    now = [0.0]
    state = State()
    saver = CheckpointSaver(state, every_epochs=2, save_every_steps=4, save_every_minutes=1.0, clock=lambda: now[0])
    for step in range(1, 11):
        state.trainer.completed_steps = step
        now[0] += 25.0  # 25 s per step: the 60 s clock fires after three steps without a save
        saver.on_train_batch_end(step - 1)
    saver.on_epoch_end(1)
    # Step 3 by the clock (75 s after the start), steps 4 and 8 by count, step 7 by the clock (75 s after
    # the save at 4); step 10 ends the epoch, so only the epoch-end save (a snapshot: epoch 2 of every 2)
    # writes it.
    assert state.saves == [(3, False), (4, False), (7, False), (8, False), (10, True)]
