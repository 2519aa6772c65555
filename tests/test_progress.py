"""Progress off a terminal: log lines at 10 % steps and every 30 s, with throughput and ETA."""

from __future__ import annotations

import logging
import re

import pytest

from fgvc import progress as progress_module
from fgvc.progress import Progress, Work, format_duration, progress, run_eta

LINE = re.compile(r"^(?P<desc>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), "
                  r"[\d.]+ img/s, .*elapsed \d+:\d\d, ETA \d+:\d\d$")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "fgvc.progress"]


def test_log_mode_off_a_terminal(monkeypatch):
    monkeypatch.delenv("FGVC_PROGRESS", raising=False)
    assert progress_module.progress_mode() == "log"  # pytest captures stderr: not a terminal
    monkeypatch.setenv("FGVC_PROGRESS", "bar")
    assert progress_module.progress_mode() == "bar"


def test_a_line_at_every_ten_percent(caplog, monkeypatch):
    monkeypatch.delenv("FGVC_PROGRESS", raising=False)
    caplog.set_level(logging.INFO)
    bar = progress(range(50), desc="loop")
    for _ in bar:
        bar.set_postfix(loss="1.234")
    lines = _lines(caplog)
    assert len(lines) == 10, lines
    done = [int(LINE.match(line)["done"]) for line in lines]
    assert done == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert all("loss 1.234" in line for line in lines)


def test_a_line_every_thirty_seconds_without_a_total(caplog, monkeypatch):
    monkeypatch.setattr(Progress, "_start_watchdog", lambda self: None)  # the fake clock is ours
    clock = iter(range(0, 10_000, 10))  # 10 s per call
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: float(next(clock)))
    caplog.set_level(logging.INFO)
    with Progress(total=None, desc="stream", unit="img", mode="log") as bar:
        for _ in range(9):
            bar.update()
    lines = _lines(caplog)
    # no total, so no 10 % steps: one line per 30 s of the fake clock
    assert len(lines) == 3 and all("elapsed" in line and "img/s" in line for line in lines)


def test_watchdog_logs_during_one_long_item(caplog, monkeypatch):
    """A batch longer than the interval still gets its line, from the watchdog thread."""
    import time

    monkeypatch.setattr(progress_module, "LOG_EVERY_SECONDS", 0.2)
    monkeypatch.setattr(progress_module, "WATCH_EVERY_SECONDS", 0.05)
    caplog.set_level(logging.INFO)
    for _ in Progress(range(1), desc="slow", unit="batch", mode="log"):
        time.sleep(1.0)
    during = [line for line in _lines(caplog) if line.startswith("slow: 0/1 batch (0%)")]
    assert len(during) >= 2, _lines(caplog)


def test_images_count_batches(caplog):
    caplog.set_level(logging.INFO)
    bar = Progress(range(10), desc="b", unit="batch", mode="log")
    for _ in bar:
        bar.count_images(8)
    assert bar.images == 80 and bar.done == 10


def test_train_epoch_logs_loss_and_eta(caplog, monkeypatch):
    """A real (tiny) training loop, as under nohup: lines with loss, throughput and ETA."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fgvc.engine.loop import EpochOptions, train_one_epoch

    monkeypatch.delenv("FGVC_PROGRESS", raising=False)
    caplog.set_level(logging.INFO)
    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    loader = [(xb, yb, torch.arange(len(yb)), 0) for xb, yb in DataLoader(TensorDataset(x, y),
                                                                         batch_size=4)]
    model = torch.nn.Linear(4, 3)
    steps = []
    options = EpochOptions(lambda s: 0.1, torch.device("cpu"), channels_last=False, log_every=1,
                           track=lambda s, loss, lr: steps.append((s, lr)))
    train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), options,
                    desc="train 1/1")
    lines = _lines(caplog)
    assert len(lines) == 10 and all(LINE.match(line) for line in lines), lines
    assert all("loss " in line and "lr " in line for line in lines)
    assert steps == [(s, 0.1) for s in range(1, 11)]


def test_run_eta_scales_later_passes_by_pixels():
    # 2 train epochs of 100 images at 64 px (0.1 s each), then 2 adapt epochs at twice the side
    # (4x pixels), then a forward pass of 50 images at 128 px (0.02 s per image at 64 px)
    work = [Work(200, 64, True), Work(200, 128, True), Work(50, 128)]
    assert run_eta(work, 0.1, 0.02, 64) == pytest.approx(200 * 0.1 + 200 * 0.4 + 50 * 0.08)


def test_images_per_second_leaves_out_the_first_items_start_up(caplog, monkeypatch):
    """The first batch carries the loader's and kernels' start-up: the pace is measured after
    it, so a slow first batch does not pull the figure below what the loop achieves."""
    monkeypatch.setattr(Progress, "_start_watchdog", lambda self: None)
    times = iter([0.0, 10.0, 11.0, 12.0, 13.0, 14.0, 14.0])  # start, 5 batch ends, last line
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(times))
    caplog.set_level(logging.INFO)
    bar = Progress(total=5, desc="slow start", unit="batch", mode="log")
    for _ in range(5):
        bar.count_images(8)
        bar.update()
    assert bar.images_per_second(14.0) == pytest.approx(4 * 8 / 4.0)  # not 40 / 14
    assert "8.0 img/s" in _lines(caplog)[-1]


def test_format_duration():
    assert format_duration(62) == "1:02" and format_duration(3723) == "1:02:03"
    assert format_duration(float("nan")) == "?"
