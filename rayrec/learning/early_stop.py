"""Early stopping on a validation score: the best epoch's weights, and whether patience ran out."""

from __future__ import annotations

from typing import Any

import torch


class BestEpoch:
    """Tracks the best validated epoch. patience 0: never stops, and the last epoch's weights are kept."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.score: float | None = None
        self.epoch = 0
        self._state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float, model: torch.nn.Module) -> bool:
        """Records epoch's validation score (keeping the weights if it is the best); True: stop now."""
        if self.score is None or score > self.score:
            self.score, self.epoch = score, epoch
            self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.patience > 0 and epoch - self.epoch >= self.patience

    def restore(self, model: torch.nn.Module, history: list[dict[str, Any]]) -> None:
        """Loads the best epoch's weights into model and notes it in the last epoch's stats."""
        if self._state is not None and self.patience > 0:
            model.load_state_dict(self._state)
            history[-1]["best_epoch"] = self.epoch
