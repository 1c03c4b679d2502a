"""Tiny model versions for the tests (unit and integration): a two-tower-like space and a sequential one, as
`rayrec train` writes them (rayrec.learning.store folders), in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rayrec.learning import store
from rayrec.users import model_files
from rayrec.users.sequential_user import SequentialUser

SEQUENCE_DIM, RANK = 8, 4  # a sequential version is SEQUENCE_DIM + RANK + 1 = 13-d


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def two_tower(root: Path | str, ids: list[str], dim: int, text_dim: int, rng: np.random.Generator) -> str:
    """A version folder holding a random unit vector for every id and a random text path."""
    return store.save(root, "two-tower", ids, unit_rows(rng.standard_normal((len(ids), dim))),
                      np.zeros(len(ids), bool), rng.standard_normal((dim, text_dim)).astype(np.float32),
                      np.zeros(dim, np.float32), {})


def sequential_user(ids: list[str], rng: np.random.Generator, seed: int = 0) -> tuple[SequentialUser, np.ndarray]:
    """A SequentialUser over ids with random weights, and its item vectors (equal norms, unnormalised)."""
    import torch

    from rayrec.learning.sequential import SequenceParams, SequentialModel
    from rayrec.users.sequence_model import SequenceModel
    from rayrec.users.sequential_user import equal_norms, spread

    params = SequenceParams(dim=SEQUENCE_DIM, length=6, blocks=1)
    torch.manual_seed(seed)
    net = SequentialModel(len(ids), params).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    sequence = SequenceModel({k: v.detach().numpy() for k, v in net.state_dict().items()}, params.blocks)
    context = rng.standard_normal((len(ids), RANK)).astype(np.float32)
    target = rng.standard_normal((len(ids), RANK)).astype(np.float32)
    user = SequentialUser(sequence, {item: j for j, item in enumerate(ids)}, context, 0.8, 0.6,
                          spread(sequence.item_vectors), spread(target))
    return user, equal_norms(np.concatenate([sequence.item_vectors, target], axis=1))


def sequential(root: Path | str, ids: list[str], text_dim: int, rng: np.random.Generator,
               seed: int = 0) -> tuple[str, SequentialUser]:
    """A sequential version folder (its user model in user_model/, as `rayrec train --model sequential`)."""
    user, items = sequential_user(ids, rng, seed)
    folder = store.save(root, "sequential", ids, items, np.zeros(len(ids), bool),
                        rng.standard_normal((user.dim, text_dim)).astype(np.float32), np.zeros(user.dim, np.float32),
                        {}, write_more=lambda f: model_files.save(user, f / store.USER_MODEL))
    return folder, user


def padded(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Unit rows, zeros after their own coordinates up to dim: what the index holds of a smaller space."""
    x = unit_rows(np.atleast_2d(vectors))
    return np.concatenate([x, np.zeros((len(x), dim - x.shape[1]), np.float32)], axis=1)
