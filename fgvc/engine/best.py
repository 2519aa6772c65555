"""``checkpoint.keep: best``: which epoch's weights scored best on the validation split."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class BestEpoch:
    """The best epoch so far by ``metric`` (higher is better, except for a loss); its state
    travels in the epoch checkpoint so a resumed run keeps comparing against it."""

    metric: str
    epoch: int | None = None
    value: float | None = None

    def offer(self, epoch: int, value: float) -> bool:
        """Record ``epoch`` if it beats the best so far (ties keep the earlier epoch)."""
        lower_is_better = self.metric.endswith("loss")
        better = self.value is None or (value < self.value if lower_is_better
                                        else value > self.value)
        if better:
            self.epoch, self.value = epoch, value
        return better

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.value = state["epoch"], state["value"]


def describe_selection(selected: dict | None) -> str:
    """Which weights a stage ended with, in words (for report.md)."""
    if not selected:
        return ""
    weights = "EMA" if selected["weights"] == "ema" else "raw"
    if selected.get("metric"):
        return (f"; weights: epoch {selected['epoch']} ({weights}), best "
                f"{selected['metric']} {selected['value']:.2f}")
    return f"; weights: last epoch {selected['epoch']} ({weights})"
