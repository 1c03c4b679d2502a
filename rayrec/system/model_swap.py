"""Moving a running system to another item space (a trained model version) while traffic flows.

swap_model runs the steps; the router and the user actors hold the state:

1. Items the new model has no vector for are placed by its text path, from the
   text each such item keeps (metadata `text`), here, where the encoder is.
2. router.stage_space: with item writes held (they wait, none fails), a new
   shard generation is filled side by side with every item's vector in the new
   space; queries go on against the current one.
3. Every user actor pauses: its calls wait, the ones in flight finish.
4. router.switch_space: the new generation becomes current, the old one stops;
   item writes go on, in the new space.
5. Every user actor takes the new space's user model (a sequential version's
   own, loaded from its folder; none for another version: the feedback rule),
   re-derives its users' vectors from their kept history in the new space (by
   that model where it knows the history, else rayrec.users.feedback_rule.rederive;
   a user set by text starts from their text embedding placed by the new text
   path), and resumes. With storage, it snapshots them first.

A model of a smaller dimension than the index is served in it padded with zeros
(rayrec.learning.placement.pad): every vector of the new space this swap, the
user actors and later item writes make is the index's dimension. One of a larger
dimension is refused.

A recommendation reads its user's vector and searches inside one user-actor
call, which a pause waits for, so it is answered from one space, whole, and
names it. Feedback waits at a paused actor and is applied after the switch:
none is lost. A failure before step 4 leaves everything as it was.

With storage, rewriting layout.json (with the new space in it) in step 4 is the
commit point. User actors snapshot their state, with its space, when they pause
(step 3) and after re-deriving (step 5): one that restarts in between recovers
the old space's state, sees the router's new one, and re-derives before serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.catalogs.catalog import ItemBatch
from rayrec.catalogs.ingest import TEXT_COLUMN as TEXT_KEY  # the metadata an item added by its text keeps it in
from rayrec.exceptions import InvalidInputError, LayoutChangedError, RayrecError, root_cause

log = logging.getLogger(__name__)

TEXT_SPACE = "text"  # the encoder's own space: no learned model
UNNAMED_SPACE = "unnamed"  # the space of a system started without one (vectors given by a driver)
ATTEMPTS = 3


class CatalogChangedError(RayrecError, RuntimeError):
    """An item's text changed (or an item came) between placing the new model's items and staging them."""


class SpaceChangedError(RayrecError, RuntimeError):
    """A vector placed in one item space reached a system that has moved to another: place it again."""


def space_of(version: str, path: str | None) -> dict[str, str | None]:
    """The record of an item space the router and the user actors keep: its version and model folder."""
    return {"version": version, "path": path}


def placer_of(space: dict[str, Any], dim: int | None = None) -> Any:
    """The Placer of a space's model (None for the encoder's own space, which has no model folder).

    dim: the index's dimension, which the placer's vectors are padded to (default: the model's own).
    """
    from rayrec.learning import store
    from rayrec.learning.placement import Placer

    return Placer(store.load(str(space["path"])), dim) if space.get("path") else None


def vectors_in(placer: Any, batch: ItemBatch, placed: dict[str, tuple[str, np.ndarray]]) -> np.ndarray:
    """Every item of batch as a vector of placer's space: the model's own, else its text's as placed.

    Args:
        placer: rayrec.learning.placement.Placer of the new model (its vectors of the index's dimension).
        batch: the items (ids, metadata with their `text` where they keep one).
        placed: item id -> (the text it was placed from, its vector as placer.text gives it), for the items
            the model lacks.

    Returns:
        (len(batch), placer.dim) vectors.

    Raises:
        InvalidInputError: items the model lacks that keep no text (added as raw embeddings): nothing can place them.
        CatalogChangedError: an item the model lacks whose text is not the one placed (changed or new since).
    """
    texts = batch.metadata.get(TEXT_KEY) or [None] * len(batch)
    out = np.empty((len(batch), placer.dim), dtype=np.float32)
    unknown = set(placer.unknown(batch.ids))
    known = [n for n in range(len(batch)) if n not in unknown]
    if known:
        out[known] = placer.items([batch.ids[n] for n in known], None)
    lacking, stale = [], []
    for n in sorted(unknown):
        item, text = batch.ids[n], texts[n]
        if text is None:
            lacking.append(item)
        elif item not in placed or placed[item][0] != text:
            stale.append(item)
        else:
            out[n] = placed[item][1]
    if lacking:
        raise InvalidInputError(
            f"{len(lacking)} items have no vector in model {placer.version} and no text to place them by "
            f"(they were added as raw embeddings): {lacking[:10]}; add them again with text, or delete them, "
            "then swap"
        )
    if stale:
        raise CatalogChangedError(f"{len(stale)} items changed while the new model was being placed: {stale[:10]}")
    return out


async def swap_model(
    router: Any,
    users: list[Any],
    folder: str,
    encode: Callable[[list[str]], Awaitable[np.ndarray]],
    create_shards: Callable[[Any, Any, bool], list[list[Any]]],
) -> dict[str, Any]:
    """Moves the system behind router and users to the model in folder, under traffic (see the module).

    Args:
        router, users: the system's router and user-vector actor handles.
        folder: a model version's folder (rayrec.learning.store.resolve).
        encode: texts -> (n, e) text embeddings (the encoder the model was trained with).
        create_shards: rayrec.system.deploy.create_shards (config, generation, detached) -> replica handles.

    Returns:
        {"model_version", "previous", "items", "users", "paused_ms", "seconds"}.
    """
    from rayrec.learning import store
    from rayrec.learning.placement import Placer
    from rayrec.system.layout import Generation

    t0 = time.monotonic()
    space = space_of(str(store.manifest(folder)["version"]), str(folder))
    learned = store.load(str(folder))
    config, current, detached = await router.get_layout.remote()
    if learned.dim > config.index.dim:  # checked before anything is recorded: a refused swap changes nothing
        raise InvalidInputError(
            f"model {learned.version} is {learned.dim}-d but this system's index is {config.index.dim}-d: a running "
            "system swaps only to a model of its own dimension or a smaller one (padded); serve the other one anew"
        )
    placer = Placer(learned, config.index.dim)  # a smaller model's vectors padded to the index's dimension
    # A system started without naming its space (a driver's) gets a name for it: user actors record it.
    previous = (await router.set_item_space.remote(space_of(UNNAMED_SPACE, None)))["version"]
    for attempt in range(ATTEMPTS):
        texts: dict[str, str] = await router.texts_to_place.remote(str(folder))
        ids = list(texts)
        placed: dict[str, tuple[str, np.ndarray]] = {}
        if ids:
            vectors = placer.text(np.asarray(await encode([texts[i] for i in ids]), np.float32))
            placed = {item: (texts[item], vectors[n]) for n, item in enumerate(ids)}
        config, current, detached = await router.get_layout.remote()
        new = Generation(current.number + 1, uuid.uuid4().hex[:8], current.num_shards)
        groups = create_shards(config, new, detached)
        try:
            staged = await router.stage_space.remote(groups, new, current.number, space, placed)
            break
        except BaseException as exc:  # the router stops the new shards; also if this call was cancelled
            await asyncio.shield(asyncio.wrap_future(router.abort_space.remote(new).future()))
            if not isinstance(exc, Exception):
                raise
            if attempt + 1 < ATTEMPTS and isinstance(root_cause(exc), (CatalogChangedError, LayoutChangedError)):
                continue
            raise root_cause(exc) from None
    # From here on the steps run to their end even if the caller goes away (a cancelled request).
    done = await asyncio.shield(_switch(router, users, new, space))
    return {
        "model_version": placer.version,
        "previous": previous,
        "items": staged["items"],
        **done,
        "seconds": round(time.monotonic() - t0, 3),
    }


async def _switch(router: Any, users: list[Any], new: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Steps 3-5: pause every user actor, switch the router, resume them (each re-derives its users).

    Before the switch, any failure resumes the actors unchanged and drops the staged shards. After it,
    an actor whose re-derivation failed re-derives before it serves its next call (never a mix of spaces).
    """
    paused_at = time.monotonic()
    swap = new.token  # pauses and resumes of this swap only
    pauses = await asyncio.gather(
        *(u.pause.remote(swap, space, C.SWAP_TIMEOUT_S) for u in users), return_exceptions=True
    )
    try:
        failed = [p for p in pauses if isinstance(p, BaseException)]
        if failed:
            raise root_cause(failed[0])
        stuck = [u for p in pauses for u in p["cannot_move"]]
        if stuck:
            raise InvalidInputError(
                f"{sum(p['cannot_move_count'] for p in pauses)} users cannot be placed in model {space['version']}: "
                f"set by a raw vector (no history or text to place them by) or by text of another encoder, e.g. "
                f"{stuck[:5]}: set them by history or text, then swap"
            )
        await router.switch_space.remote(new)
    except BaseException:
        await asyncio.gather(*(u.resume.remote(swap) for u in users), return_exceptions=True)
        await router.abort_space.remote(new)
        raise
    resumed = await asyncio.gather(*(u.resume.remote(swap) for u in users), return_exceptions=True)
    late = sum(isinstance(r, BaseException) for r in resumed)
    if late:
        log.warning("model swap: %d user actors re-derive their users at their next call", late)
    return {
        "users": sum(r["users"] for r in resumed if not isinstance(r, BaseException)),
        "paused_ms": round((time.monotonic() - paused_at) * 1000, 1),
    }
