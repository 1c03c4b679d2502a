"""HTTP request and response bodies (pydantic: the edge of the system)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Event = Literal["click", "like", "purchase", "skip", "dislike"]
NonEmpty = Field(min_length=1, max_length=512, pattern=r"\S")


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: list[str] = Field(min_length=1, description="allowed categories")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = NonEmpty
    k: int = Field(10, ge=1, description="results wanted, 1..max_k")
    exclude_seen: bool = True
    filter: Filter | None = None


class RecommendBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[RecommendRequest] = Field(
        min_length=1, description="one entry per user, each as POST /recommend's body"
    )


class Item(BaseModel):
    model_config = ConfigDict(extra="allow")
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    user_id: str
    user_version: int
    cold_start: bool
    partial: bool
    items: list[Item]
    model_version: str = Field(description="the item space the answer came from: a trained model's version, or `text`")
    freshness_ms: float | None = Field(
        None, description="on the first answer after a feedback event: ms from the event's arrival to this answer"
    )


class RecommendFailure(BaseModel):
    user_id: str
    status: int = Field(description="the HTTP status POST /recommend would have answered for this user")
    detail: str
    error: str


class RecommendBatchResponse(BaseModel):
    results: list[RecommendResponse | RecommendFailure] = Field(description="per request, in order")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = NonEmpty
    item_id: str = NonEmpty
    event: Event
    event_id: str | None = Field(None, min_length=1, max_length=512)
    ts: float | None = Field(None, description="client time of the event (seconds since the epoch)")


class UserVersion(BaseModel):
    user_id: str
    user_version: int
    applied: bool = True


class UserPut(BaseModel):
    """Exactly one of vector, text, history."""

    model_config = ConfigDict(extra="forbid")
    vector: list[float] | None = None
    text: str | None = Field(None, min_length=1, max_length=10_000)
    history: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def exactly_one(self) -> UserPut:
        given = [name for name in ("vector", "text", "history") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of vector, text, history (got {given or 'none'})")
        return self


class UserOut(BaseModel):
    user_id: str
    user_version: int
    history: list[dict]
    updated_at: float


class ItemIn(BaseModel):
    """An item: text or embedding (embedding wins when both are given), category and string metadata."""

    model_config = ConfigDict(extra="allow")
    item_id: str = NonEmpty
    text: str | None = Field(None, min_length=1, max_length=10_000)
    embedding: list[float] | None = None
    category: str | None = None

    @model_validator(mode="after")
    def text_or_embedding(self) -> ItemIn:
        if self.text is None and self.embedding is None:
            raise ValueError("an item needs a text or an embedding")
        for name, value in (self.model_extra or {}).items():
            if value is not None and not isinstance(value, str):
                raise ValueError(f"metadata field {name!r} must be a string")
        return self


class ItemsPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn] = Field(min_length=1)


class ModelSwap(BaseModel):
    """POST /model: the trained model version to move the running system to."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, description="latest, a version (v3) or a model folder")


class ModelSwapped(BaseModel):
    model_version: str
    previous: str | None
    items: int
    users: int
    paused_ms: float = Field(description="how long user calls waited while the switch happened")
    seconds: float


class EncodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1)


class EncodeResponse(BaseModel):
    dim: int
    embeddings: list[list[float]]
