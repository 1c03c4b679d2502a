"""The two-tower model in plain torch, shaped like the server's own user rule.

Item tower: normalise(P(text embedding) + id embedding). P is a linear map
from the frozen encoder's space into the learned one; the id embedding is a
per-item correction learned from interactions (zero for an item the training
data never saw, and dropped at random during training so the text path alone
learns to place items; the same loss on the text path alone trains it directly).
User tower: normalise(sum of the item vectors of the
user's recent interactions, the newest weighing 1, the one before `recency`, ...,
each also weighted by its event's signed rate in the feedback rule: like 1, click
0.4, dislike -1), which is what rayrec's `set_history` and, roughly, its feedback rule compute,
so the space is trained for the way the server moves users in it. Loss: a
softmax over every item with interactions, the items already in the example's
context masked out as the server excludes seen items (catalogs up to
CATALOG_SOFTMAX_MAX_ITEMS by default), or over the batch's target items
(in-batch negatives) with the logQ correction for how often each item is a target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from rayrec.exceptions import InvalidInputError

PAD = -1  # an empty context slot
TEXT_MAPS = ("trained", "ridge")
NEGATIVES = ("auto", "catalog", "batch")
# `auto` scores every item each step up to this many (a (batch x items) product per step); beyond, the batch.
CATALOG_SOFTMAX_MAX_ITEMS = 20_000


@dataclass(frozen=True, slots=True)
class TrainParams:
    """How the two-tower model is trained (chosen on a validation slice of MovieLens' history; see README).

    Args:
        dim: the learned space's dimension (the index dimension; independent of the encoder's).
        context: most recent positives the user tower pools.
        recency: weight ratio between consecutive context items (newest weighs 1).
        epochs: passes over the training examples.
        batch_size: examples per step (with `batch` negatives, also the number of negatives + 1), at least.
        max_steps: steps per epoch at most: a log with more than max_steps * batch_size examples per
            worker trains with larger batches (on a 1M-interaction log, 1,087 instead of 256: 49 s per
            epoch instead of 70-78 s on 2 cores, the same held-out HR@10 after each epoch).
        learning_rate: Adam's step size.
        temperature: softmax temperature of the cosine scores.
        id_dropout: share of item-id embeddings dropped per step.
        text_loss: weight of the same loss with the targets' text path alone (trains it to place new items).
        negatives: what each example's item is scored against: `catalog` (every item, those in the example's
            context masked out: measured better on MovieLens' validation slice, see README), `batch` (the
            batch's other targets, logQ-corrected: for catalogs too big to score whole at each step), or
            `auto` (catalog up to CATALOG_SOFTMAX_MAX_ITEMS items, else batch).
        text_map: the text path kept after training: `trained` (the projection the loss trained) or `ridge`
            (a ridge regression from text embeddings onto the trained vectors of the items with interactions,
            as the SVD baseline places its new items).
        patience: with validation after each epoch, stop after this many epochs without a better one
            (keeping the best one's weights); 0 trains every epoch and keeps the last.
        seed: torch and numpy seed.
    """

    dim: int = 64
    context: int = 50
    recency: float = 0.8
    epochs: int = 20
    batch_size: int = 256
    max_steps: int = 600
    learning_rate: float = 3e-3
    temperature: float = 0.1
    id_dropout: float = 0.5
    text_loss: float = 0.5
    negatives: str = "auto"
    text_map: str = "trained"
    patience: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim", "context", "epochs", "batch_size", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise InvalidInputError(f"patience must be an integer >= 0, got {self.patience!r}")
        if not 0 < self.recency <= 1:
            raise InvalidInputError(f"recency must be in (0, 1], got {self.recency!r}")
        if not self.learning_rate > 0 or not self.temperature > 0:
            raise InvalidInputError("learning_rate and temperature must be > 0")
        if not 0 <= self.id_dropout < 1:
            raise InvalidInputError(f"id_dropout must be in [0, 1), got {self.id_dropout!r}")
        if not self.text_loss >= 0:
            raise InvalidInputError(f"text_loss must be >= 0, got {self.text_loss!r}")
        if self.negatives not in NEGATIVES:
            raise InvalidInputError(f"negatives must be one of {', '.join(NEGATIVES)}, got {self.negatives!r}")
        if self.text_map not in TEXT_MAPS:
            raise InvalidInputError(f"text_map must be one of {', '.join(TEXT_MAPS)}, got {self.text_map!r}")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


class TwoTower(torch.nn.Module):
    """Item tower (text projection + id embedding) and a pooling user tower over the same item vectors."""

    def __init__(self, text: np.ndarray, has_history: np.ndarray, params: TrainParams) -> None:
        """text: (n_items, e) frozen text embeddings; has_history: (n_items,) bool, items with an id embedding."""
        super().__init__()
        self.params = params
        self.register_buffer("text", torch.tensor(np.asarray(text, np.float32)))  # a copy: Ray hands read-only arrays
        self.register_buffer("has_id", torch.tensor(np.asarray(has_history, bool)))
        self.project = torch.nn.Linear(self.text.shape[1], params.dim)
        self.ids = torch.nn.Embedding(self.text.shape[0], params.dim)
        torch.nn.init.normal_(self.ids.weight, std=0.1)
        ages = torch.arange(params.context - 1, -1, -1, dtype=torch.float32)
        self.register_buffer("weights", params.recency**ages)  # context slot -> weight (last slot = newest)
        self.whole_catalog = params.negatives == "catalog" or (
            params.negatives == "auto" and self.text.shape[0] <= CATALOG_SOFTMAX_MAX_ITEMS
        )

    def items(self, idx: torch.Tensor, drop_ids: bool = False, projected: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised item vectors of item rows idx (any shape); projected: their text projection, if computed."""
        ids = self.ids(idx) * self.has_id[idx].unsqueeze(-1)
        if drop_ids and self.params.id_dropout > 0:
            ids = ids * (torch.rand(idx.shape, device=idx.device) >= self.params.id_dropout).unsqueeze(-1)
        if projected is None:
            projected = self.project(self.text[idx])
        return torch.nn.functional.normalize(projected + ids, dim=-1)

    def users(
        self, context: torch.Tensor, sign: torch.Tensor | None = None, drop_ids: bool = False,
        vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised user vectors from (batch, context) item rows, oldest first, PAD-padded on the left.

        sign: (batch, context) weight of each slot's event (default 1: all positives).
        vectors: (batch, context, dim) the slots' item vectors, if already computed (else from the item tower)."""
        mask = (context != PAD).float() * self.weights[-context.shape[1] :]
        if sign is not None:
            mask = mask * sign
        if vectors is None:
            vectors = self.items(context.clamp(min=0), drop_ids)
        pooled = (vectors * mask.unsqueeze(-1)).sum(dim=1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def text_items(self, idx: torch.Tensor) -> torch.Tensor:
        """Item vectors from the text path alone (how an item without interactions is placed)."""
        return torch.nn.functional.normalize(self.project(self.text[idx]), dim=-1)

    def forward(
        self, context: torch.Tensor, sign: torch.Tensor, target: torch.Tensor, log_q: torch.Tensor
    ) -> torch.Tensor:
        """The training loss: a softmax over the whole catalog or the batch's targets (see TrainParams.negatives),
        once with the items' full vectors and once (weighted by text_loss) with their text path alone, which
        trains that path to place items where their interactions would have put them.

        The item tower runs once per step, over the items the step needs (every item for the catalog softmax,
        else the batch's context and target items); each item's id embedding is dropped or kept for the whole
        step, wherever it appears."""
        n, device = self.text.shape[0], target.device
        if self.whole_catalog:
            needed = torch.arange(n, device=device)
        else:
            needed = torch.unique(torch.cat([context[context != PAD], target]))
        lookup = torch.full((n,), -1, dtype=torch.long, device=device)
        lookup[needed] = torch.arange(len(needed), device=device)
        # The text projection once per step: both the full vectors and the text path alone start from it.
        projected = self.project(self.text if self.whole_catalog else self.text[needed])
        table = self.items(needed, drop_ids=True, projected=projected)
        text_table = torch.nn.functional.normalize(projected, dim=-1)
        users = self.users(context, sign, vectors=table[lookup[context.clamp(min=0)]])
        if self.whole_catalog:
            return self._catalog_loss(users, context, target, table, text_table)
        same = target.unsqueeze(0) == target.unsqueeze(1)
        mask = same & ~torch.eye(len(target), dtype=torch.bool, device=device)
        labels = torch.arange(len(target), device=device)

        def softmax_loss(items: torch.Tensor) -> torch.Tensor:
            logits = (users / self.params.temperature) @ items.T - log_q[target].unsqueeze(0)
            return torch.nn.functional.cross_entropy(logits.masked_fill(mask, -1e9), labels)

        loss = softmax_loss(table[lookup[target]])
        if self.params.text_loss > 0:
            loss = loss + self.params.text_loss * softmax_loss(text_table[lookup[target]])
        return loss

    def _catalog_loss(
        self, users: torch.Tensor, context: torch.Tensor, target: torch.Tensor, table: torch.Tensor,
        text_table: torch.Tensor,
    ) -> torch.Tensor:
        """Softmax over every item with interactions (table: every item's vector this step); the example's
        context items (seen: the server never recommends them) masked. Items without interactions are no
        negatives: nothing says a user would not pick them, and their text path, shared with every item,
        would learn to push them away from everyone."""
        rows = torch.arange(len(target), device=target.device)
        seen = (~self.has_id).unsqueeze(0).repeat(len(target), 1)
        held = context != PAD
        seen[rows.unsqueeze(1).expand_as(context)[held], context[held]] = True
        seen[rows, target] = False  # an item seen before and positive again stays the label

        def softmax_loss(items: torch.Tensor) -> torch.Tensor:
            logits = (users / self.params.temperature) @ items.T  # the (batch x dim) side scaled, not the logits
            return torch.nn.functional.cross_entropy(logits.masked_fill(seen, -1e9), target)

        loss = softmax_loss(table)
        if self.params.text_loss > 0:
            loss = loss + self.params.text_loss * softmax_loss(text_table)
        return loss

    @torch.no_grad()
    def item_table(self) -> np.ndarray:
        """(n_items, dim) float32: every item's vector (text path alone for items without history)."""
        return self.items(torch.arange(self.text.shape[0], device=self.text.device)).cpu().numpy().astype(np.float32)
