"""Sensible bounds of a recipe's numbers, per field: what fits a GPU and a lifetime, refused
with the field path before anything runs (a 2^63 batch size or a 10^9-pixel resolution is a
typo, not an experiment). Fields not listed: integers within +-(2^31 - 1); every float finite.
"""

from __future__ import annotations

MAX_DEPTH = 64  # how deeply a recipe's YAML may nest

_PIXELS = (None, 8192, " pixels")
_BATCH = (None, 65536, " images")
_EPOCHS = (None, 100_000, " epochs")

# (section class name, field) -> (lowest, highest, unit); list fields bound their items. A
# lowest of None leaves the lower end to the section's own check(), which words it better.
Bounds = tuple[float | None, float, str]
BOUNDS: dict[tuple[str, str], Bounds] = {
    ("StageConfig", "resolution"): _PIXELS,
    ("StageConfig", "epochs"): _EPOCHS,
    ("StageConfig", "batch_size"): _BATCH,
    ("InferenceConfig", "resolutions"): _PIXELS,
    ("InferenceConfig", "batch_size"): _BATCH,
    ("Recipe", "sweep_resolutions"): _PIXELS,
    ("Recipe", "seed"): (0, 2**32 - 1, ""),
    ("DatasetConfig", "num_workers"): (None, 1024, " worker processes"),
    ("ScheduleConfig", "every"): _EPOCHS,
    ("ScheduleConfig", "warmup_epochs"): _EPOCHS,
    ("OptimizerConfig", "lr"): (None, 1000, ""),
    ("OptimizerConfig", "weight_decay"): (None, 10, ""),
    ("SubmissionConfig", "top_k"): (None, 100_000, " classes"),
    ("CheckpointConfig", "every_minutes"): (None, 1e6, " minutes"),
}


def bounds_for(cls: type, field: str) -> Bounds | None:
    """The bounds of ``cls.field``, looked up along the class hierarchy (EvaluateConfig and
    PredictConfig share InferenceConfig's)."""
    for klass in getattr(cls, "__mro__", ()):
        found = BOUNDS.get((klass.__name__, field))
        if found is not None:
            return found
    return None
