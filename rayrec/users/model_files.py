"""A model-based user on disk: safetensors and JSON (never pickle), in one folder.

    <folder>/user_model.json          kind, blocks, decay, weight, click, tower_share, tower_decay, item ids
                                      (the row order)
    <folder>/user_model.safetensors   the sequential model's weights, the EASE context vectors, the tower's
                                      item vectors (if it has that part), the parts' spreads
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from rayrec.exceptions import InvalidInputError
from rayrec.users.sequence_model import SequenceModel
from rayrec.users.sequential_user import SequentialUser

INFO = "user_model.json"
TENSORS = "user_model.safetensors"
KIND = "sequential"
PREFIX = "sequence."


def save(user: SequentialUser, folder: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    tensors = {PREFIX + k: np.ascontiguousarray(v) for k, v in user.sequence.w.items()}
    tensors.update(context=np.ascontiguousarray(user.context, np.float32),
                   spread_output=np.ascontiguousarray(user.spread_output, np.float64),
                   spread_target=np.ascontiguousarray(user.spread_target, np.float64))
    if user.tower is not None:
        tensors.update(tower=np.ascontiguousarray(user.tower, np.float32),
                       spread_tower=np.ascontiguousarray(user.spread_tower, np.float64))
    save_file(tensors, os.path.join(folder, TENSORS))
    ids = [i for i, _ in sorted(user.rows.items(), key=lambda kv: kv[1])]
    info = {"kind": KIND, "blocks": user.sequence.blocks, "decay": user.decay, "weight": user.weight,
            "click": user.click, "tower_share": user.tower_share, "tower_decay": user.tower_decay, "dim": user.dim,
            "item_ids": ids,
            **(extra or {})}
    with open(os.path.join(folder, INFO), "w") as f:
        json.dump(info, f)


def load(folder: str | os.PathLike[str]) -> SequentialUser:
    """The SequentialUser saved in folder; InvalidInputError naming what is missing or wrong."""
    from safetensors.numpy import load_file

    try:
        with open(os.path.join(folder, INFO)) as f:
            info = json.load(f)
        tensors = load_file(os.path.join(folder, TENSORS))
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"no readable user model in {str(folder)!r}: {exc}") from None
    if info.get("kind") != KIND:
        raise InvalidInputError(f"{str(folder)!r} holds a user model of kind {info.get('kind')!r}, not {KIND!r}")
    sequence = SequenceModel({k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)},
                             int(info["blocks"]))
    rows = {item: r for r, item in enumerate(info["item_ids"])}
    if len(rows) != sequence.n_items or tensors["context"].shape[0] != len(rows):
        raise InvalidInputError(f"the user model in {str(folder)!r} is inconsistent: "
                                f"{len(rows)} item ids, {sequence.n_items} item rows")
    return SequentialUser(sequence, rows, tensors["context"], float(info["decay"]), float(info["weight"]),
                          tensors["spread_output"], tensors["spread_target"], float(info.get("click", 0.0)),
                          tensors.get("tower"), tensors.get("spread_tower"), float(info.get("tower_share", 0.0)),
                          None if info.get("tower_decay") is None else float(info["tower_decay"]))


def load_checked(folder: str, dim: int) -> tuple[SequentialUser | None, str | None]:
    """(the model in folder, None), or (None, why it cannot serve an index of dim-d vectors)."""
    try:
        model = load(folder)
    except InvalidInputError as exc:
        return None, f"user model {folder!r} not loaded: {exc}"
    if model.dim != dim:
        return None, f"user model {folder!r} not loaded: its users are {model.dim}-d, the index {dim}-d"
    return model, None
