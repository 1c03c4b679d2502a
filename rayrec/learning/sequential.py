"""The sequential user model in plain torch: a causal transformer (SASRec-class) over a user's recent positives.

Input: the user's last `length` events, oldest first, left-padded; each slot
gets its item's input vector (what the user did), its event type's vector (liked,
clicked, disliked) and a learned position vector (the newest is always the last
slot, so position is recency). Each slot is trained to predict the user's next
positive item. Two pre-norm
blocks of causal self-attention and a ReLU feed-forward; the last slot's output is
the user's vector. Scores are dot products with separate output item vectors (what
the user is offered), trained with a softmax over every item at every slot (Kang &
McAuley 2018's architecture; the full softmax instead of one sampled negative).
The forward pass is plain enough to run in numpy at serving time
(rayrec.users.sequence_model), where it must give the same vectors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from rayrec.evaluation.data import Event
from rayrec.exceptions import InvalidInputError
from rayrec.learning.early_stop import BestEpoch
from rayrec.users.sequence_model import EVENT_TYPES, N_TYPES

PAD_ROW = 0  # input row 0 is padding; item row j is input row j + 1


@dataclass(frozen=True, slots=True)
class SequenceParams:
    """How the sequential model is shaped and trained (chosen on MovieLens' validation slice)."""

    dim: int = 64
    length: int = 50
    blocks: int = 2
    dropout: float = 0.2
    epochs: int = 40
    batch_size: int = 128
    learning_rate: float = 1e-3
    mask_seen: bool = True
    patience: int = 3
    seed: int = 0
    tower: bool = True  # blend in a two-tower part (rayrec.learning.sequential_space; trained with it)
    # The softmax is over every item while an epoch scores at most max_logits (slot, item) pairs (MovieLens
    # 100K: 0.17e9, ml-latest-small: 0.9e9); beyond, over `negatives` items sampled afresh each step.
    max_logits: int = 2_000_000_000
    negatives: int = 1024

    def __post_init__(self) -> None:
        for name in ("dim", "length", "blocks", "epochs", "batch_size", "max_logits", "negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.dropout < 1 or not self.learning_rate > 0 or self.patience < 0:
            raise InvalidInputError("dropout must be in [0, 1), learning_rate > 0, patience >= 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Block(torch.nn.Module):
    """Pre-norm causal self-attention (one head) and feed-forward, each with a residual."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.out = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.up = torch.nn.Linear(dim, dim)
        self.down = torch.nn.Linear(dim, dim)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(x.shape[-1])
        attention = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        x = x + self.drop(self.out(self.drop(attention) @ v))
        return x + self.drop(self.down(self.drop(torch.relu(self.up(self.norm2(x))))))


class SequentialModel(torch.nn.Module):
    """Input item vectors, positions, blocks, a final norm; output item vectors."""

    def __init__(self, n_items: int, params: SequenceParams, sampled: int | None = None) -> None:
        """sampled: train with a softmax over the target and this many items drawn each step (None: every item)."""
        super().__init__()
        self.params = params
        self.sampled = sampled
        self.inputs = torch.nn.Embedding(n_items + 1, params.dim, padding_idx=PAD_ROW)
        self.positions = torch.nn.Embedding(params.length, params.dim)
        self.types = torch.nn.Embedding(N_TYPES, params.dim, padding_idx=0)
        self.blocks = torch.nn.ModuleList(Block(params.dim, params.dropout) for _ in range(params.blocks))
        self.norm = torch.nn.LayerNorm(params.dim)
        self.outputs = torch.nn.Embedding(n_items, params.dim)
        self.drop = torch.nn.Dropout(params.dropout)
        for table in (self.inputs, self.positions, self.types, self.outputs):
            torch.nn.init.normal_(table.weight, std=0.05)
        with torch.no_grad():
            self.inputs.weight[PAD_ROW].zero_()
            self.types.weight[0].zero_()

    def hidden(self, seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(batch, length, dim) outputs for (batch, length) input rows (item row + 1, PAD_ROW = padding) and
        their event types (EVENT_TYPES' values, 0 for padding)."""
        length = seq.shape[1]
        real = seq != PAD_ROW
        x = self.inputs(seq) * math.sqrt(self.params.dim) + self.types(types) + self.positions.weight[-length:]
        x = self.drop(x) * real.unsqueeze(-1)
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=seq.device))
        allowed = (causal.unsqueeze(0) & real.unsqueeze(1)) | torch.eye(length, dtype=torch.bool, device=seq.device)
        for block in self.blocks:
            x = block(x, allowed) * real.unsqueeze(-1)
        return self.norm(x)

    def users(self, seq: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(batch, dim): the last slot's output, the user's vector."""
        return self.hidden(seq, types)[:, -1]

    def forward(self, seq: torch.Tensor, types: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Softmax loss at every slot with a target (item rows, -1 where nothing to predict): over every item, or
        (self.sampled) over the target and items drawn uniformly this step, their logits raised by
        log((n - 1) / drawn) so the sum estimates the whole catalog's. With params.mask_seen, the items a slot's
        window shows up to it are no negatives there (the server never recommends what a user has seen),
        unless one is that slot's target."""
        hidden = self.hidden(seq, types)
        n = self.outputs.weight.shape[0]
        if self.sampled is None:
            logits, labels = hidden @ self.outputs.weight.T, target
            column = torch.arange(n, device=seq.device)  # item row -> its logit column
        else:
            drawn = torch.randperm(n, device=seq.device)[: self.sampled]
            column = torch.full((n,), -1, dtype=torch.long, device=seq.device)
            column[drawn] = torch.arange(1, len(drawn) + 1, device=seq.device)  # column 0: the slot's target
            own = (hidden * self.outputs(target.clamp(min=0))).sum(dim=-1, keepdim=True)
            others = hidden @ self.outputs.weight[drawn].T + math.log((n - 1) / len(drawn))
            logits, labels = torch.cat([own, others], dim=-1), torch.where(target >= 0, 0, -1)
            b, t = torch.nonzero((target >= 0) & (column[target.clamp(min=0)] > 0), as_tuple=True)
            logits = logits.index_put((b, t, column[target[b, t]]), torch.tensor(-1e9, device=seq.device))
        if self.params.mask_seen:
            # (window, slot, earlier slot) triples, at most length^2 per window: far fewer than the dense
            # (window, slot, item) mask, which cost more than the logits themselves on a 3,700-item catalog.
            length = seq.shape[1]
            earlier = torch.tril(torch.ones(length, length, dtype=torch.bool, device=seq.device))
            pick = earlier.unsqueeze(0) & (seq != PAD_ROW).unsqueeze(1) & (target >= 0).unsqueeze(2)
            b, t, s = torch.nonzero(pick, as_tuple=True)
            item = seq[b, s] - 1
            keep = (item != target[b, t]) & (column[item] >= 0)  # and, sampled, drawn this step
            logits = logits.index_put((b[keep], t[keep], column[item[keep]]), torch.tensor(-1e9, device=seq.device))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=-1)


def user_sequences(events: list[Event], index: dict[str, int]) -> dict[str, list[tuple[int, int, bool]]]:
    """Each user's events in time order: (item row, event type, positive)."""
    out: dict[str, list[tuple[int, int, bool]]] = {}
    for e in events:
        out.setdefault(e.user, []).append((index[e.item], EVENT_TYPES[e.feedback], e.positive))
    return out


def windows(sequences: dict[str, list[tuple[int, int, bool]]], length: int) -> tuple[np.ndarray, ...]:
    """Training windows: each user's events cut from the end into pieces of length + 1, left-padded; a slot's
    target is the next event's item if that one is positive (else -1, as for padding).
    Returns (input rows, event types, target item rows), each (windows, length) int64."""
    inputs, types, targets = [], [], []
    for seq in sequences.values():
        for end in range(len(seq), 1, -length):
            piece = seq[max(0, end - length - 1) : end]
            pad = length + 1 - len(piece)
            inputs.append([PAD_ROW] * pad + [j + 1 for j, _, _ in piece[:-1]])
            types.append([0] * pad + [t for _, t, _ in piece[:-1]])
            targets.append([-1] * pad + [j if positive else -1 for j, _, positive in piece[1:]])
    shape = (-1, length)
    return tuple(np.asarray(a, dtype=np.int64).reshape(shape) for a in (inputs, types, targets))


def inputs_of(events: list[tuple[int, int]], length: int) -> tuple[list[int], list[int]]:
    """The input rows and types of a user's last `length` (item row, event type) events (left-padded)."""
    last = events[-length:]
    pad = length - len(last)
    return [PAD_ROW] * pad + [j + 1 for j, _ in last], [0] * pad + [t for _, t in last]


class NextItemCheck:
    """The scored events of `after` (each positive whose user had an event before it; users' events before
    each come from `before`, then `after`) prepared once: their input windows, targets and the items they
    exclude (everything the user had an event on). hit_rate(model) then costs the model's pass and a few
    tensor operations per batch (each epoch's validation)."""

    def __init__(self, before: list[Event], after: list[Event], index: dict[str, int], length: int) -> None:
        sequences: dict[str, list[tuple[int, int]]] = {}
        seen: dict[str, set[int]] = {}
        for e in before:
            sequences.setdefault(e.user, []).append((index[e.item], EVENT_TYPES[e.feedback]))
            seen.setdefault(e.user, set()).add(index[e.item])
        rows, types, targets, excluded = [], [], [], []
        for e in after:
            mine = sequences.setdefault(e.user, [])
            row = index[e.item]
            if e.positive and mine:
                r, t = inputs_of(mine, length)
                rows.append(r)
                types.append(t)
                targets.append(row)
                excluded.append(sorted(seen[e.user]))
            mine.append((row, EVENT_TYPES[e.feedback]))
            seen.setdefault(e.user, set()).add(row)
        self.rows = torch.tensor(rows, dtype=torch.int64).reshape(-1, length)
        self.types = torch.tensor(types, dtype=torch.int64).reshape(-1, length)
        self.targets = torch.tensor(targets, dtype=torch.int64)
        # (event, item) of every excluded pair, and whether an event's target is among its excluded (a miss).
        self.pairs = torch.tensor([(n, j) for n, skip in enumerate(excluded) for j in skip],
                                  dtype=torch.int64).reshape(-1, 2)
        self.seen_target = torch.tensor([target in set(skip) for target, skip in zip(targets, excluded, strict=True)],
                                        dtype=torch.bool)

    @torch.no_grad()
    def hit_rate(self, model: SequentialModel, k: int = 10, batch: int = 512) -> float:
        """HR@k of the model (seen items excluded; ties rank the lower row first)."""
        n = len(self.targets)
        if not n:
            return 0.0
        out = model.outputs.weight.T
        columns = torch.arange(out.shape[1])
        hits = 0
        for start in range(0, n, batch):
            end = min(n, start + batch)
            scores = model.users(self.rows[start:end], self.types[start:end]) @ out
            mine = self.pairs[(self.pairs[:, 0] >= start) & (self.pairs[:, 0] < end)]
            scores[mine[:, 0] - start, mine[:, 1]] = float("-inf")
            target = self.targets[start:end]
            score = scores[torch.arange(end - start), target][:, None]
            ahead = (scores > score).sum(dim=1) + ((scores == score) & (columns[None] < target[:, None])).sum(dim=1)
            hits += int(((ahead < k) & ~self.seen_target[start:end]).sum())
        return hits / n


def next_item_hit_rate(
    model: SequentialModel, before: list[Event], after: list[Event], index: dict[str, int], k: int = 10,
    batch: int = 512,
) -> float:
    """HR@k of the model on each positive of `after` whose user had an event before it (NextItemCheck)."""
    return NextItemCheck(before, after, index, model.params.length).hit_rate(model, k, batch)


def train_sequential(
    events: list[Event], index: dict[str, int], params: SequenceParams,
    validate: Callable[[SequentialModel], float] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[SequentialModel, list[dict[str, Any]]]:
    """Trains on every user's positives in events; with validate (model -> HR@10), stops after
    params.patience epochs without a better one and keeps the best epoch's weights."""
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    x, types, y = windows(user_sequences(events, index), params.length)
    sampled = params.negatives if x.size * len(index) > params.max_logits and params.negatives < len(index) else None
    model = SequentialModel(len(index), params, sampled)
    if len(x) == 0 or not (y >= 0).any():
        raise InvalidInputError("no positive interaction follows another one of its user: nothing to train the "
                                "sequential model on")
    x_t, types_t, y_t = torch.as_tensor(x), torch.as_tensor(types), torch.as_tensor(y)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    history: list[dict[str, Any]] = []
    best = BestEpoch(params.patience)
    for epoch in range(1, params.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.as_tensor(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), params.batch_size):
            batch = order[start : start + params.batch_size]
            loss = model(x_t[batch], types_t[batch], y_t[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        model.eval()
        stats: dict[str, Any] = {"epoch": epoch, "loss": round(total / len(x), 4),
                                 "seconds": round(time.perf_counter() - started, 2)}
        stop = False
        if validate is not None:
            score = validate(model)
            stats["validation"] = {"hr@10": round(score, 5)}
            stop = best.update(epoch, score, model)
        if on_epoch is not None:
            on_epoch(stats)
        history.append(stats)
        if stop:
            break
    best.restore(model, history)
    return model, history
