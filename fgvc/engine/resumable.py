"""What a stage's resume checkpoints keep of the model.

When everything trains, the whole state dict. With a frozen part (an adapt stage that trains the
classifier and the last BN, a fine-tune of the head), only what training can change (the
trainable parameters and every buffer, e.g. batch-norm statistics) and a digest of the frozen
parameters. On resume the stage starts again from the same weights (the previous stage's final
checkpoint, or the model's pretrained or seeded ones) and the digest is checked before the rest
is loaded. A full ResNet-50 is about 100 MB written and synced to disk at every epoch end; an
adapt stage on cached activations spent most of its time on that write.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from fgvc.engine.evaluation_cache import tensors_digest
from fgvc.errors import WeightsError
from fgvc.models.weights import load_exactly


class ResumableState:
    """The model's entries of a stage's resume checkpoints (``state``) and their loading
    (``load``). Build it once the stage's ``requires_grad`` flags are set and before any
    training, while the model holds the weights the stage starts from."""

    def __init__(self, model: nn.Module, everything: bool):
        self.model = model
        self.frozen: set[str] = set() if everything else {
            name for name, p in model.named_parameters(remove_duplicate=False)
            if not p.requires_grad}
        self.digest = tensors_digest(
            (k, v) for k, v in model.state_dict().items() if k in self.frozen) \
            if self.frozen else None

    def state(self) -> dict:
        """``{"model": ..., "frozen_digest": ...}`` for a checkpoint payload."""
        full = self.model.state_dict()
        if not self.frozen:
            return {"model": full}
        return {"model": {k: v for k, v in full.items() if k not in self.frozen},
                "frozen_digest": self.digest}

    def load(self, checkpoint: dict, path: Path) -> None:
        """Load a checkpoint ``state`` wrote (or a full one, as every earlier fgvc wrote)."""
        if "frozen_digest" not in checkpoint:
            load_exactly(self.model, checkpoint["model"], path)
            return
        if checkpoint["frozen_digest"] != self.digest:
            raise WeightsError(
                f"{path}: saved for other frozen weights than this stage starts from (the "
                "previous stage's checkpoint, the pretrained weights or the stage's trainable "
                f"groups changed since); remove {path} to run the stage from its start")
        saved_frozen = sorted(self.frozen & set(checkpoint["model"]))
        if saved_frozen:
            raise WeightsError(f"{path}: holds frozen tensors a resume checkpoint leaves out "
                               f"(e.g. {', '.join(saved_frozen[:3])})")
        load_exactly(self.model, checkpoint["model"], path, absent_ok=self.frozen)
