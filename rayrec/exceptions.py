"""Errors rayrec raises; each message says what was wrong and what is accepted."""

from __future__ import annotations


class RayrecError(Exception):
    """Base class of every rayrec error."""


class InvalidInputError(RayrecError, ValueError):
    """A caller passed a value rayrec cannot accept (bad vector, k, id, event...)."""


class ItemNotFoundError(RayrecError, KeyError):
    """An operation named an item id that no shard holds."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else "item not found"


class ShardUnavailableError(RayrecError, RuntimeError):
    """A shard failed or missed its deadline, and the router is set to raise."""


class ShardRetiredError(RayrecError, RuntimeError):
    """A call reached a shard a re-shard switched away from: ask the router for the current shards."""


class ReplicaOutOfSyncError(ShardUnavailableError):
    """A shard replica that missed a write another replica applied: it answers no reads until it is repaired."""


class LayoutChangedError(RayrecError, RuntimeError):
    """A re-shard was planned against a shard generation that is no longer the current one."""


class DimensionMismatchError(InvalidInputError):
    """A vector's dimension differs from the index's."""


# Errors that say the caller's request is wrong: never retried, never blamed on a shard.
CALLER_ERRORS: tuple[type[Exception], ...] = (InvalidInputError, ItemNotFoundError)


def root_cause(exc: BaseException) -> BaseException:
    """The error an actor raised, under the wrappers Ray puts around it (RayTaskError.cause)."""
    seen = 0
    while isinstance(getattr(exc, "cause", None), BaseException) and seen < 16:
        exc = exc.cause  # type: ignore[attr-defined]
        seen += 1
    return exc
