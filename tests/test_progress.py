"""The command line's training bar shows samples/s and the time the whole run has left, computed as
the studio computes it (``callbacks.seconds_left``)."""
from types import SimpleNamespace

from nram_core.callbacks import StepInfo, seconds_left
from nram_core.cli.progress import TrainingBar


def test_the_bar_shows_samples_per_second_and_the_time_left(capsys):
    trainer = SimpleNamespace(total_steps=110, train_config=SimpleNamespace(batch_size=64))
    bar = TrainingBar(True)
    bar.on_step(trainer, StepInfo(epoch=1, step=10, steps_in_epoch=55, global_step=10, loss=1.5, samples_per_s=32.0))
    bar.bar.refresh()
    shown = capsys.readouterr().err
    assert "samples_s=32" in shown and "left=3m20s" in shown  # 100 steps x 64 samples at 32 samples/s
    bar.on_train_end(trainer, SimpleNamespace(chosen_on="dev"))


def test_seconds_left_waits_for_a_measure_and_stops_at_the_end():
    assert seconds_left(done_steps=0, total_steps=10, batch_size=8, samples_per_s=100.0) is None
    assert seconds_left(done_steps=10, total_steps=10, batch_size=8, samples_per_s=100.0) is None
    assert seconds_left(done_steps=5, total_steps=10, batch_size=8, samples_per_s=0.0) is None
    assert seconds_left(done_steps=5, total_steps=10, batch_size=8, samples_per_s=4.0) == 10.0
