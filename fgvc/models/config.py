"""A recipe's ``model:`` section: the architecture, its weights and the data settings that
override the model's own. The model factory builds from it; recipes (fgvc/recipes/recipe.py)
parse and check it without importing timm for a catalogued name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fgvc.models.names import refusal


@dataclass
class ModelConfig:
    """Architecture and weights; data settings come from the model unless overridden here."""

    arch: str
    pretrained: Literal["none", "imagenet"] = "none"
    weights: str | None = None
    drop_rate: float = 0.0
    mean: list[float] | None = None
    std: list[float] | None = None
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None
    crop_pct: float | None = None
    img_size: int | None = None
    channels_last: bool = True
    compile: bool = False  # torch.compile of the train and eval forward; eager where unsupported

    def check(self) -> list[tuple[str, str]]:
        out = []
        problem = refusal(self.arch)  # a catalogued name is checked without timm
        if problem is not None:
            out.append(("arch", problem))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                out.append((key, f"must hold 3 numbers (R, G, B), got {value!r}"))
        if self.std is not None and any(s <= 0 for s in self.std):
            out.append(("std", f"must be > 0, got {self.std!r}"))
        if self.crop_pct is not None and not 0 < self.crop_pct <= 1:
            out.append(("crop_pct", f"must be in (0, 1], got {self.crop_pct!r}"))
        if not 0 <= self.drop_rate < 1:
            out.append(("drop_rate", f"must be in [0, 1), got {self.drop_rate!r}"))
        if self.img_size is not None and self.img_size <= 0:
            out.append(("img_size", f"must be a positive number of pixels, got {self.img_size!r}"))
        if self.pretrained != "none" and self.weights:
            out.append(("weights", "give either pretrained: imagenet or a weights file, not both"))
        return out
