"""A learned item space on disk: versioned folders of safetensors, Parquet and JSON (never pickle).

    <root>/v<N>/manifest.json     version, kind, dimensions, training parameters and metrics
    <root>/v<N>/items.parquet     item_id, vector (the item vectors the shards hold), from_text
    <root>/v<N>/text_map.safetensors  text_weight (dim, e), text_bias (dim,): the item tower's text
                                  path, which places new items (and text-described users) in the space
    <root>/v<N>/user_model/       a sequential space only: the model that computes users from their events

A version is written to a hidden folder first and renamed into place, so a
reader never sees half of one; `latest` is the highest complete version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError

MANIFEST = "manifest.json"
ITEMS = "items.parquet"
TEXT_MAP = "text_map.safetensors"
USER_MODEL = "user_model"  # a sequential space's folder of rayrec.users.model_files
VERSION = re.compile(r"^v(\d+)$")
LATEST = "latest"


def default_root() -> Path:
    """Where `rayrec train` writes and `rayrec serve --model latest` reads: $RAYREC_CACHE_DIR/models."""
    from rayrec.catalogs.movielens import cache_dir

    return cache_dir() / "models"


@dataclass(frozen=True, slots=True)
class LearnedSpace:
    """One version of a learned item space, loaded."""

    version: str
    path: str
    kind: str  # "two-tower", "svd" or "sequential" (then its folder holds USER_MODEL/)
    item_ids: list[str]
    vectors: np.ndarray  # (n, dim) float32, normalised
    from_text: np.ndarray  # (n,) bool: placed by the text path alone
    text_weight: np.ndarray  # (dim, e)
    text_bias: np.ndarray  # (dim,)
    manifest: dict[str, Any]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def text_dim(self) -> int:
        return int(self.text_weight.shape[1])

    def place(self, text_embeddings: np.ndarray) -> np.ndarray:
        """The item tower's text path: (n, e) encoder embeddings -> (n, dim) normalised vectors in this space."""
        x = np.asarray(text_embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.text_dim:
            raise InvalidInputError(
                f"model {self.version} maps {self.text_dim}-d text embeddings, got shape {x.shape}: "
                "serve it with the encoder it was trained with"
            )
        out = x @ self.text_weight.T + self.text_bias
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def versions(root: str | os.PathLike[str]) -> list[int]:
    """Complete versions under root, ascending."""
    folder = Path(root)
    if not folder.is_dir():
        return []
    found = [int(m.group(1)) for p in folder.iterdir() if (m := VERSION.match(p.name)) and (p / MANIFEST).is_file()]
    return sorted(found)


def save(
    root: str | os.PathLike[str],
    kind: str,
    item_ids: list[str],
    vectors: np.ndarray,
    from_text: np.ndarray,
    text_weight: np.ndarray,
    text_bias: np.ndarray,
    info: dict[str, Any],
    write_more: Callable[[Path], None] | None = None,
) -> str:
    """Writes a new version under root; returns its folder. write_more(folder) adds files to it before it
    becomes visible (a sequential space's user model)."""
    from safetensors.numpy import save_file

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(item_ids) or len(from_text) != len(item_ids):
        raise ValueError(
            f"{len(item_ids)} item ids, vectors of shape {vectors.shape}, {len(from_text)} from_text flags"
        )
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        save_file({"text_weight": np.ascontiguousarray(text_weight, dtype=np.float32),
                   "text_bias": np.ascontiguousarray(text_bias, dtype=np.float32)}, str(staging / TEXT_MAP))
        dim = vectors.shape[1]
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({
            "item_id": pa.array(item_ids, type=pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            "from_text": pa.array(np.asarray(from_text, dtype=bool)),
        })
        pq.write_table(table, staging / ITEMS)
        if write_more is not None:
            write_more(staging)
        while True:  # another writer may take a number first: take the next one
            taken = [int(m.group(1)) for p in folder.iterdir() if (m := VERSION.match(p.name))]  # complete or not
            number = max(taken, default=0) + 1
            manifest = {"version": f"v{number}", "kind": kind, "dim": dim, "text_dim": int(text_weight.shape[1]),
                        "items": len(item_ids), "items_from_text": int(np.sum(from_text)),
                        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
            try:
                os.rename(staging, folder / f"v{number}")
                return str(folder / f"v{number}")
            except OSError:
                if not (folder / f"v{number}").exists():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve(model: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A model folder from `latest`, a version name (`v3`) under root, or a folder path."""
    base = Path(root) if root is not None else default_root()
    if model == LATEST:
        found = versions(base)
        if not found:
            raise InvalidInputError(f"no trained model under {base}: run `rayrec train` first (or pass --model PATH)")
        return base / f"v{found[-1]}"
    path = base / model if VERSION.match(model) else Path(model)
    if not (path / MANIFEST).is_file():
        raise InvalidInputError(
            f"{path} is not a rayrec model folder (no {MANIFEST}): give `latest`, a version or a path"
        )
    return path


def resolve_named(model: str, root: str | os.PathLike[str] | None = None) -> Path:
    """resolve() for a caller over the network: `latest`, a version or the name of a folder directly under
    root, never another server path."""
    base = Path(root) if root is not None else default_root()
    if not isinstance(model, str) or not 0 < len(model) <= C.MAX_MODEL_NAME_CHARS:
        raise InvalidInputError(f"model must be a name of 1 to {C.MAX_MODEL_NAME_CHARS} characters")
    if model in (".", "..") or any(c in model for c in "/\\\x00") or Path(model).is_absolute():
        raise InvalidInputError(
            f"model {model[:40]!r} is not a name: give `latest`, a version (v3) or a folder under the models root "
            f"({base}); other server paths are not accepted over HTTP"
        )
    try:
        return resolve(model if model == LATEST or VERSION.match(model) else str(base / model), base)
    except OSError as exc:
        raise InvalidInputError(f"model {model[:40]!r}: {exc.strerror}") from None


def manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A model folder's manifest.json."""
    try:
        return dict(json.loads((Path(folder) / MANIFEST).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"model folder {folder}: unreadable {MANIFEST}: {exc}") from None


def load(model: str, root: str | os.PathLike[str] | None = None) -> LearnedSpace:
    """Loads `latest`, a version name or a folder (see resolve); safetensors and Parquet only."""
    from safetensors.numpy import load_file

    path = resolve(model, root)
    info = manifest(path)
    lacking = [key for key in ("version", "kind", "dim", "text_dim") if key not in info]
    if lacking:
        raise InvalidInputError(f"model folder {path}: {MANIFEST} lacks {', '.join(lacking)}")
    try:
        tensors = load_file(str(path / TEXT_MAP))
        table = pq.read_table(path / ITEMS)
        dim, text_dim = int(info["dim"]), int(info["text_dim"])
        column = table["vector"].combine_chunks()
        lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if column.null_count or (lengths != dim).any():
            raise InvalidInputError(f"model folder {path}: {ITEMS} has vectors that are not {dim}-d")
        vectors = column.flatten().to_numpy().reshape(-1, dim).astype(np.float32)
        ids = [str(x) for x in table["item_id"].to_pylist()]
        from_text = table["from_text"].to_numpy(zero_copy_only=False).astype(bool)
    except InvalidInputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise InvalidInputError(f"model folder {path} is unreadable or incomplete: {exc}") from None
    weight, bias = tensors.get("text_weight"), tensors.get("text_bias")
    if weight is None or bias is None or weight.shape != (dim, text_dim) or bias.shape != (dim,):
        raise InvalidInputError(f"model folder {path}: {TEXT_MAP} does not hold a {dim}-d text map")
    return LearnedSpace(str(info["version"]), str(path), str(info["kind"]), ids, vectors, from_text, weight, bias, info)
