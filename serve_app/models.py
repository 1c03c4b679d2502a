"""HTTP request and response bodies (pydantic: the edge of the system)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from rayrec import constants as C
from rayrec.index.metadata import check_name
from rayrec.validation import check_id, check_text

Event = Literal["click", "like", "purchase", "skip", "dislike"]
# An item or user id: 1..512 characters, no control characters, "/" or lone surrogates (rayrec.validation).
Id = Annotated[str, Field(min_length=1, max_length=C.MAX_ID_CHARS, pattern=r"\S"), AfterValidator(check_id)]
EventId = Annotated[
    str, Field(min_length=1, max_length=C.MAX_EVENT_ID_CHARS), AfterValidator(lambda v: check_id(v, event=True))
]
Text = Annotated[str, Field(min_length=1, max_length=C.MAX_TEXT_CHARS), AfterValidator(lambda v: check_text(v, "text"))]
Value = Annotated[
    str, Field(max_length=C.MAX_METADATA_VALUE_CHARS), AfterValidator(lambda v: check_text(v, "a metadata value"))
]


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: list[Value] = Field(min_length=1, max_length=C.MAX_FILTER_CATEGORIES, description="allowed categories")


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
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
    user_model: str = Field(
        "rule", description="what moves users: `sequential` (a model over their recent events) or `rule` (the "
        "feedback rule, also where a configured user model could not be loaded)"
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
    user_id: Id
    item_id: Id
    event: Event
    event_id: EventId | None = Field(
        None, description="the idempotency key: a call sent again with the same event_id is applied once"
    )
    ts: float | None = Field(
        None, allow_inf_nan=False, description="client time of the event (seconds since the epoch)"
    )


class UserVersion(BaseModel):
    user_id: str
    user_version: int
    applied: bool = True


class UserPut(BaseModel):
    """Exactly one of vector, text, history."""

    model_config = ConfigDict(extra="forbid")
    vector: list[float] | None = Field(None, max_length=65_536)
    text: Text | None = None
    history: list[Id] | None = Field(None, min_length=1, max_length=C.MAX_HISTORY_IDS)

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


class UserDeleted(BaseModel):
    user_id: str
    deleted: bool = Field(description="true: the user was known and is erased (from storage too)")


class UserExport(BaseModel):
    """Everything rayrec keeps about a user."""

    user_id: str
    user_version: int
    vector: list[float]
    history: list[dict]
    updated_at: float
    event_ids: list[str] = Field(description="the event ids remembered for idempotency, oldest first")
    placed_from: dict | None = Field(
        None, description="when the vector was set: the text embedding it was placed from (null for a raw vector)"
    )


class ItemIn(BaseModel):
    """An item: text or embedding (embedding wins when both are given), category and string metadata."""

    model_config = ConfigDict(extra="allow")
    item_id: Id
    text: Text | None = None
    embedding: list[float] | None = Field(None, max_length=65_536)
    category: Value | None = None

    @model_validator(mode="after")
    def text_or_embedding(self) -> ItemIn:
        if self.text is None and self.embedding is None:
            raise ValueError("an item needs a text or an embedding")
        extra = self.model_extra or {}
        if len(extra) + 1 > C.MAX_METADATA_FIELDS:
            raise ValueError(f"{len(extra) + 1} metadata fields; at most {C.MAX_METADATA_FIELDS} are accepted")
        for name, value in extra.items():
            check_name(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"metadata field {name!r} must be a string")
            if value is not None:
                check_text(value, f"metadata field {name!r}", C.MAX_METADATA_VALUE_CHARS)
        return self


class ItemsPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[ItemIn] = Field(min_length=1)


class ModelSwap(BaseModel):
    """POST /model: the trained model version to move the running system to."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        min_length=1, max_length=C.MAX_MODEL_NAME_CHARS,
        description="latest, a version (v3) or the name of a folder under the models root",
    )


class ModelSwapped(BaseModel):
    model_version: str
    previous: str | None
    items: int
    users: int
    paused_ms: float = Field(description="how long user calls waited while the switch happened")
    seconds: float


class EncodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(max_length=C.MAX_TEXT_CHARS)]] = Field(
        min_length=1, max_length=C.ENCODER_MAX_TEXTS_PER_CALL
    )


class EncodeResponse(BaseModel):
    dim: int
    embeddings: list[list[float]]
