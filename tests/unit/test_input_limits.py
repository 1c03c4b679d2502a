"""Input that Python accepts but the system must not: lone surrogates, non-finite numbers, control
characters and "/" in ids, and every size limit, each refused naming the field and the limit."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from rayrec import constants as C
from rayrec.config import IndexConfig
from rayrec.exceptions import InvalidInputError
from rayrec.index.item_index import ItemIndex
from rayrec.index.metadata import check_metadata
from rayrec.index.row_table import META_PREFIX
from rayrec.learning import store
from rayrec.validation import check_categories, check_history, check_id, check_text, parse_json


@pytest.mark.parametrize(
    "value,needle",
    [
        ("a\x00", "'\\x00' at position 1"),
        ("\x00", "'\\x00' at position 0"),
        ("a/b", "'/' at position 1"),
        ("tab\there", "'\\t' at position 3"),
        ("\x85next-line", "'\\x85' at position 0"),
        ("\ud800", "lone surrogates"),
        ("x" * (C.MAX_ID_CHARS + 1), f"at most {C.MAX_ID_CHARS} are accepted"),
        ("  ", "non-empty string"),
    ],
)
def test_bad_ids_are_refused_naming_the_character_or_limit(value, needle) -> None:
    with pytest.raises(InvalidInputError, match="item id") as err:
        check_id(value)
    assert needle in str(err.value)


def test_good_ids_pass_unchanged_and_event_ids_may_hold_slashes() -> None:
    for value in ("sku-1", "ünïcödé", "😀", "x" * C.MAX_ID_CHARS, "a b"):
        assert check_id(value) == value
    assert check_id(42) == "42"
    assert check_id("client/1/event", "event id", event=True) == "client/1/event"
    with pytest.raises(InvalidInputError, match=f"at most {C.MAX_EVENT_ID_CHARS}"):
        check_id("e" * (C.MAX_EVENT_ID_CHARS + 1), "event id", event=True)
    with pytest.raises(InvalidInputError, match="control"):
        check_id("e\x00", "event id", event=True)


def test_text_and_filters_refuse_surrogates_and_lengths() -> None:
    assert check_text("naïve 😀", "text") == "naïve 😀"
    with pytest.raises(InvalidInputError, match=r"not valid UTF-8 text: a lone surrogate '\\udc00' at position 2"):
        check_text("ab\udc00", "text")
    with pytest.raises(InvalidInputError, match="at most 5 are accepted"):
        check_text("abcdef", "text", 5)
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        check_categories(["Drama", "\ud800"])
    with pytest.raises(InvalidInputError, match=f"at most {C.MAX_FILTER_CATEGORIES}"):
        check_categories([f"c{i}" for i in range(C.MAX_FILTER_CATEGORIES + 1)])


def test_histories_are_bounded_before_any_vector_is_fetched() -> None:
    assert check_history(["a", "b"]) == ["a", "b"]
    assert check_history([], allow_empty=True) == []
    with pytest.raises(InvalidInputError, match="at least one"):
        check_history([])
    with pytest.raises(InvalidInputError, match=f"at most {C.MAX_HISTORY_IDS} are accepted"):
        check_history([f"i{n}" for n in range(C.MAX_HISTORY_IDS + 1)])


@pytest.mark.parametrize(
    "body,needle",
    [
        (b'{"user_id": "u", "k": NaN}', "body.k: nan is not a finite number"),
        (b'{"ts": Infinity}', "body.ts: inf is not a finite number"),
        (b'{"vector": [0.5, -Infinity]}', "body.vector[1]: -inf"),
        (b'{"vector": [1e400]}', "body.vector[0]: inf"),
        (b'{"user_id": "\\ud800"}', "body.user_id: not valid UTF-8 text (a lone surrogate '\\ud800' at position 0)"),
        (b'{"items": [{"item_id": "a", "genre": "x\\udfff"}]}', "body.items[0].genre: not valid UTF-8"),
        (b'{"items": [{"\\udc00": "x"}]}', "body.items[0] (a key): not valid UTF-8"),
        (b'{"texts": ["ok", "\\ud83d"]}', "body.texts[1]"),  # the first half of a pair, alone
        (b'{"user_id": "\xed\xa0\x80"}', "body: not UTF-8 text (byte 13"),  # a surrogate encoded raw
        (b'{"user_id": "\xff"}', "body: not UTF-8 text (byte 13"),
    ],
)
def test_json_bodies_refuse_what_json_text_may_not_hold(body, needle) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_json(body)
    assert needle in str(err.value)


def test_json_bodies_keep_everything_valid() -> None:
    body = '{"a": "😀 \\ud83d\\ude00 é", "b": [1, 2.5, -1e300, null, true], "c": {"d": "\\u00e9"}}'.encode()
    assert parse_json(body) == {"a": "😀 😀 é", "b": [1, 2.5, -1e300, None, True], "c": {"d": "é"}}
    with pytest.raises(json.JSONDecodeError):
        parse_json(b"{not json")


def test_metadata_limits_name_the_item_the_field_and_the_limit() -> None:
    ok = check_metadata({"category": ["a", None], "title": ["T", "U"]}, 2)
    assert ok == {"category": ["a", None], "title": ["T", "U"]}
    many = {f"f{i}": [None, "v"] for i in range(C.MAX_METADATA_FIELDS + 1)}
    with pytest.raises(InvalidInputError, match=f"item 1 has {C.MAX_METADATA_FIELDS + 1} metadata fields; at most"):
        check_metadata(many, 2)
    with pytest.raises(InvalidInputError, match=f"at most {C.MAX_METADATA_VALUE_CHARS} are accepted"):
        check_metadata({"title": ["x" * (C.MAX_METADATA_VALUE_CHARS + 1)]}, 1)
    wide = {f"f{i}": ["x" * C.MAX_METADATA_VALUE_CHARS] for i in range(C.MAX_METADATA_ITEM_CHARS // 1024 + 1)}
    with pytest.raises(InvalidInputError, match=f"item 0's metadata values hold .*at most {C.MAX_METADATA_ITEM_CHARS}"):
        check_metadata(wide, 1)
    with pytest.raises(InvalidInputError, match=f"at most {C.MAX_METADATA_NAME_CHARS}"):
        check_metadata({"n" * (C.MAX_METADATA_NAME_CHARS + 1): ["v"]}, 1)
    with pytest.raises(InvalidInputError, match="no control characters"):
        check_metadata({"a\x00": ["v"]}, 1)
    with pytest.raises(InvalidInputError, match="lone surrogate"):
        check_metadata({"category": ["\ud800"]}, 1)
    # the kept item text is a text, with its own (larger) limit, and not counted with the metadata
    assert check_metadata({"text": ["t" * C.MAX_TEXT_CHARS]}, 1)["text"][0] == "t" * C.MAX_TEXT_CHARS


def _index() -> ItemIndex:
    return ItemIndex(IndexConfig(dim=4, factory="Flat"))


def test_a_field_only_some_items_have_stays_theirs() -> None:
    index = _index()
    index.upsert(["a", "b", "c"], np.eye(4)[:3], {"category": ["x", "y", "z"], "title": ["A", "B", "C"]})
    index.upsert(["wide"], np.eye(4)[3:], {f"f{i}": [str(i)] for i in range(30)})
    a, b, wide = index.fetch(["a", "b", "wide"])
    assert {k for k in a if k != "vector"} == {"item_id", "category", "title"}  # not 34 keys
    assert {k for k in b if k != "vector"} == {"item_id", "category", "title"}
    assert len(wide) == 2 + 1 + 30 and wide["f7"] == "7" and wide["category"] is None
    _, ids = index.search(np.eye(4, dtype=np.float32)[:1], 4)  # every item ranks
    own = {"a": 2, "b": 2, "c": 2, "wide": 31}
    assert {i: len(m) for i, m in zip(ids[0], index.metadata_of(ids)[0])} == own  # each result its own fields
    assert index.field_names() == sorted(["title", *(f"f{i}" for i in range(30))])
    index.delete(["wide"])  # its names go with it
    assert index.field_names() == ["title"]


def test_a_shard_refuses_more_field_names_than_its_limit_before_writing(monkeypatch) -> None:
    monkeypatch.setattr(C, "MAX_METADATA_FIELDS_PER_SHARD", 5)
    index = _index()
    index.upsert(["a"], np.eye(4)[:1], {f"f{i}": ["v"] for i in range(4)})
    index.check_room({"f0": ["v"], "f4": ["v"]})  # one new name: 5 in all
    with pytest.raises(InvalidInputError, match="would give this shard 6 distinct field names; at most 5"):
        index.check_room({"f4": ["v"], "f5": ["v"]})
    index.check_room({"f9": [None], "category": ["c"]})  # no value: not a field this shard holds


def test_snapshots_keep_sparse_fields_and_read_the_older_form() -> None:
    index = _index()
    index.upsert(["a", "b"], np.eye(4)[:2], {"category": ["x", None], "title": ["A", None], "only_b": [None, "B"]})
    table, blob, info = index.export_state()
    assert "metadata" in table.column_names and not any(n.startswith(META_PREFIX) for n in table.column_names)
    again = _index()
    again.import_state(table, blob, info)
    assert [{k: v for k, v in r.items() if k != "vector"} for r in again.fetch(["a", "b"])] == [
        {"item_id": "a", "category": "x", "title": "A"}, {"item_id": "b", "category": None, "only_b": "B"}]
    assert again.field_names() == ["only_b", "title"]
    older = table.drop_columns(["metadata"]).append_column(META_PREFIX + "title", pa.array(["A", None], pa.string()))
    old = _index()
    old.import_state(older, blob, info)
    assert {k: v for k, v in old.fetch(["a"])[0].items() if k != "vector"} == {
        "item_id": "a", "category": "x", "title": "A"}
    assert "title" not in old.fetch(["b"])[0]


def test_model_names_over_http_stay_under_the_models_root(tmp_path) -> None:
    for bad, needle in (("x" * 300, "1 to"), ("/etc", "not a name"), ("../v1", "not a name"), ("a\\b", "not a name")):
        with pytest.raises(InvalidInputError, match=needle):
            store.resolve_named(bad, tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / store.MANIFEST).write_text("{}")
    assert store.resolve_named("mine", tmp_path) == tmp_path / "mine"
    with pytest.raises(InvalidInputError, match="not a rayrec model folder"):
        store.resolve_named("v99", tmp_path)
