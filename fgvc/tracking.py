"""Experiment tracking: TensorBoard event files by default, Weights & Biases and MLflow on request.

Every back-end receives the same three things: per-step training loss and learning rate,
the per-epoch metrics row of every stage (the one ``metrics.jsonl`` holds), and the
accuracy-vs-resolution evaluation with its figure. wandb and mlflow are optional and imported
only when the recipe names them; a missing package or missing credentials is one warning line
and the run goes on without that back-end (losing hours of training to a tracking typo would
be worse than losing the dashboard).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Metrics-row keys that are numbers worth plotting; the others (stage, epoch) index them.
EPOCH_KEYS = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr",
              "images_per_second", "seconds", "epoch_seconds", "bad_images")


class Backend(Protocol):
    def scalars(self, values: dict[str, float], step: int) -> None: ...
    def image(self, tag: str, png: Path, step: int) -> None: ...
    def close(self) -> None: ...


class TensorBoardBackend:
    """``runs/<name>/tensorboard/``, read by ``tensorboard --logdir runs``."""

    def __init__(self, logdir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, png: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(png) as img:
            self.writer.add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbBackend:
    """``tracking: {wandb: {project: ..., <any other wandb.init argument>}}``."""

    def __init__(self, options: dict[str, Any], run_name: str, config: dict, run_dir: Path):
        import wandb

        self.wandb = wandb
        kwargs = {"name": run_name, "config": config, "dir": str(run_dir), **options}
        self.run = wandb.init(**kwargs)

    def scalars(self, values: dict[str, float], step: int) -> None:
        # wandb wants one monotonic step per run; ours restart per stage, so they go as data.
        self.run.log({**values, "step": step})

    def image(self, tag: str, png: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(png))})

    def close(self) -> None:
        self.run.finish()


class MlflowBackend:
    """``tracking: {mlflow: {tracking_uri: ..., experiment: ...}}`` (both optional)."""

    def __init__(self, options: dict[str, Any], run_name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        if options.get("tracking_uri"):
            mlflow.set_tracking_uri(options["tracking_uri"])
        if options.get("experiment"):
            mlflow.set_experiment(options["experiment"])
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params(_flatten(config))

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({k.replace("@", "_"): v for k, v in values.items()}, step=step)

    def image(self, tag: str, png: Path, step: int) -> None:
        self.mlflow.log_artifact(str(png))

    def close(self) -> None:
        self.mlflow.end_run()


def _flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """Nested recipe -> ``a.b.c: value`` parameters (MLflow keeps parameters flat)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for i, value in enumerate(data):
            out.update(_flatten(value, f"{prefix}{value.get('name', i)}."))
        return out
    return {prefix.rstrip("."): str(data)[:500]}


WANDB_CREDENTIALS = ("WANDB_API_KEY",)


def _wandb_has_credentials(options: dict[str, Any]) -> bool:
    """An API key in the environment or a ``wandb login`` entry in ~/.netrc, or offline mode."""
    if options.get("mode") in ("offline", "disabled") or os.environ.get("WANDB_MODE") in (
            "offline", "disabled"):
        return True
    if any(os.environ.get(k) for k in WANDB_CREDENTIALS):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")


class Tracker:
    """Fans every record out to the enabled back-ends; with none it does nothing."""

    def __init__(self, backends: list[Backend] | None = None):
        self.backends = list(backends or [])

    def __bool__(self) -> bool:
        return bool(self.backends)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for backend in self.backends:
            backend.scalars(values, step)

    def step(self, stage: str, step: int, loss: float, lr: float) -> None:
        """Per optimiser step: the batch loss and the learning rate."""
        self.scalars({f"{stage}/step/loss": loss, f"{stage}/step/lr": lr}, step)

    def epoch(self, row: dict) -> None:
        """A ``metrics.jsonl`` row: every number in it under ``<stage>/epoch/<key>``."""
        stage = row.get("stage", "train")
        values = {f"{stage}/epoch/{k}": float(row[k]) for k in EPOCH_KEYS
                  if isinstance(row.get(k), (int, float))}
        self.scalars(values, int(row.get("epoch", 0)))

    def evaluation(self, phase: str, results: dict[str, dict]) -> None:
        """Top-1/top-5 at each test resolution, the resolution as the step."""
        for res, metrics in results.items():
            self.scalars({f"eval/{phase}/{k}": float(metrics[k]) for k in ("top1", "top5")
                          if k in metrics}, int(res))

    def image(self, tag: str, png: Path, step: int = 0) -> None:
        for backend in self.backends:
            backend.image(tag, png, step)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []


def open_tracker(tracking: Any, run_name: str, run_dir: Path, config: dict, *,
                 tensorboard_dir: Path | None = None) -> Tracker:
    """The back-ends ``tracking`` (a recipe's TrackingConfig) asks for; each one that cannot
    start is one warning line naming what is missing. ``tensorboard_dir`` (the run folder's,
    fgvc/runfolder.py) is where TensorBoard's event files go; needed when it is asked for."""
    backends: list[Backend] = []
    if tracking.tensorboard:
        if tensorboard_dir is None:
            raise ValueError("open_tracker: tracking.tensorboard needs a tensorboard_dir")
        try:
            backends.append(TensorBoardBackend(tensorboard_dir))
        except ImportError:
            log.warning("tracking.tensorboard: the tensorboard package is not installed "
                        "(pip install tensorboard); no event files for this run")
    if tracking.wandb is not None:
        options = dict(tracking.wandb)
        if not _wandb_has_credentials(options):
            log.warning("tracking.wandb: no W&B credentials (set WANDB_API_KEY or run `wandb "
                        "login`, or set tracking.wandb.mode: offline); continuing without wandb")
        else:
            try:
                backends.append(WandbBackend(options, run_name, config, run_dir))
            except ImportError:
                log.warning("tracking.wandb: the wandb package is not installed (pip install "
                            "wandb); continuing without wandb")
            except Exception as err:  # noqa: BLE001 - wandb raises its own error types
                log.warning("tracking.wandb: could not start (%s); continuing without wandb",
                            str(err).splitlines()[0] if str(err) else type(err).__name__)
    if tracking.mlflow is not None:
        try:
            backends.append(MlflowBackend(dict(tracking.mlflow), run_name, config))
        except ImportError:
            log.warning("tracking.mlflow: the mlflow package is not installed (pip install "
                        "mlflow); continuing without mlflow")
        except Exception as err:  # noqa: BLE001 - unreachable server, bad URI, ...
            log.warning("tracking.mlflow: could not start (%s); continuing without mlflow",
                        str(err).splitlines()[0] if str(err) else type(err).__name__)
    if any(isinstance(b, TensorBoardBackend) for b in backends):
        log.info("TensorBoard: tensorboard --logdir %s", tensorboard_dir)
    return Tracker(backends)
