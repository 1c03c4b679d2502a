"""rayrec: real-time recommendations on Ray (user and item vectors, scored by dot product)."""

from rayrec.config import FeedbackRule, IndexConfig, RayrecConfig
from rayrec.exceptions import (
    DimensionMismatchError,
    InvalidInputError,
    ItemNotFoundError,
    RayrecError,
    ShardUnavailableError,
)

__all__ = [
    "DimensionMismatchError",
    "FeedbackRule",
    "IndexConfig",
    "InvalidInputError",
    "ItemNotFoundError",
    "Rayrec",
    "RayrecConfig",
    "RayrecError",
    "ShardUnavailableError",
]


def __getattr__(name: str):  # Rayrec imports Ray; the plain modules must not need it
    if name == "Rayrec":
        from rayrec.system.driver import Rayrec

        return Rayrec
    raise AttributeError(f"module 'rayrec' has no attribute {name!r}")
