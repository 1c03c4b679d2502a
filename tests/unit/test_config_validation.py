"""Settings and input checks: what is accepted, and errors that name the problem."""

from __future__ import annotations

import numpy as np
import pytest

from rayrec.config import EVENT_TYPES, FeedbackRule, IndexConfig, RayrecConfig
from rayrec.constants import DEFAULT_LEARNING_RATES
from rayrec.exceptions import DimensionMismatchError, InvalidInputError
from rayrec.validation import (
    check_categories,
    check_event,
    check_exclude,
    check_id,
    check_ids,
    check_k,
    check_vectors,
    per_query,
)


# ----- IndexConfig ------------------------------------------------------------
@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat", "IVF8,PQ4"])
def test_index_config_accepts_faiss_factories(factory: str) -> None:
    config = IndexConfig(dim=16, factory=factory)
    assert config.factory == factory and config.dim == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factory": "NotAnIndex42"}, r"faiss cannot build index factory 'NotAnIndex42' for dim 16.*'Flat'"),
        ({"factory": "IVF16,PQ5"}, r"faiss cannot build index factory 'IVF16,PQ5' for dim 16"),  # 16 % 5 != 0
        ({"factory": "IDMap,Flat"}, "leave out IDMap"),
        ({"factory": "  "}, "factory must be a faiss index-factory string"),
        ({"dim": 0}, "dim must be a positive integer, got 0"),
        ({"dim": 16.0}, "dim must be a positive integer, got 16.0"),
        ({"dim": True}, "dim must be a positive integer, got True"),
        ({"max_k": -1}, "max_k must be a positive integer"),
        ({"ef_search": 0}, "ef_search must be a positive integer"),
        ({"nprobe": 0}, "nprobe must be a positive integer"),
        ({"compact_ratio": 0}, r"compact_ratio must be in \(0, 1\]"),
        ({"compact_ratio": 1.5}, r"compact_ratio must be in \(0, 1\]"),
        ({"compact_ratio": float("nan")}, r"compact_ratio must be in \(0, 1\]"),
    ],
)
def test_index_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        IndexConfig(**{"dim": 16, **kwargs})


# ----- FeedbackRule -----------------------------------------------------------
def test_feedback_rule_defaults() -> None:
    rule = FeedbackRule()
    assert rule.learning_rates == DEFAULT_LEARNING_RATES
    assert rule.learning_rates["like"] > 0 > rule.learning_rates["dislike"]
    assert set(EVENT_TYPES) == {"click", "like", "purchase", "skip", "dislike"}


@pytest.mark.parametrize("rate", [1.0, -1.0, 1.5, float("nan"), float("inf")])
def test_learning_rate_out_of_range(rate: float) -> None:
    with pytest.raises(InvalidInputError, match=r"learning rate of 'like' must be in \(-1, 1\)"):
        FeedbackRule(learning_rates={**DEFAULT_LEARNING_RATES, "like": rate})


def test_learning_rates_must_name_exactly_the_event_types() -> None:
    with pytest.raises(InvalidInputError, match=r"learning_rates must give a rate for exactly .*got .*'share'"):
        FeedbackRule(learning_rates={**DEFAULT_LEARNING_RATES, "share": 0.1})
    missing = dict(DEFAULT_LEARNING_RATES)
    del missing["skip"]
    with pytest.raises(InvalidInputError, match="learning_rates must give a rate for exactly"):
        FeedbackRule(learning_rates=missing)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay_half_life_s": -1.0}, "decay_half_life_s must be a finite number >= 0"),
        ({"decay_half_life_s": float("inf")}, "decay_half_life_s must be a finite number >= 0"),
        ({"history_recency": 0.0}, r"history_recency must be in \(0, 1\]"),
        ({"history_recency": 1.01}, r"history_recency must be in \(0, 1\]"),
        ({"history_len": 0}, "history_len must be a positive integer"),
        ({"event_id_memory": -5}, "event_id_memory must be a positive integer"),
    ],
)
def test_feedback_rule_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        FeedbackRule(**kwargs)


# ----- RayrecConfig -----------------------------------------------------------
def test_from_dict_builds_nested_sections() -> None:
    config = RayrecConfig.from_dict(
        {
            "index": {"dim": 32, "factory": "HNSW32", "ef_search": 99},
            "num_shards": 3,
            "shard_timeout_s": 0.5,
            "on_shard_failure": "raise",
            "feedback": {"decay_half_life_s": 60.0, "history_len": 7},
        }
    )
    assert config.index == IndexConfig(dim=32, factory="HNSW32", ef_search=99)
    assert config.num_shards == 3 and config.shard_timeout_s == 0.5 and config.on_shard_failure == "raise"
    assert config.feedback.decay_half_life_s == 60.0 and config.feedback.history_len == 7
    assert config.feedback.learning_rates == DEFAULT_LEARNING_RATES
    same = RayrecConfig.from_dict({"index": IndexConfig(dim=32, factory="HNSW32", ef_search=99)})
    assert same.index == config.index and same.num_shards == RayrecConfig(index=same.index).num_shards


def test_from_dict_rejects_unknown_keys() -> None:
    known = r"known keys are \[.*'num_shards'"
    with pytest.raises(InvalidInputError, match=r"unknown config keys \['num_shard', 'timeout'\]; " + known):
        RayrecConfig.from_dict({"index": {"dim": 8}, "num_shard": 2, "timeout": 1})
    with pytest.raises(InvalidInputError, match=r"unknown keys \['nlist'\] in config section 'index'; known: .*nprobe"):
        RayrecConfig.from_dict({"index": {"dim": 8, "nlist": 4}})
    with pytest.raises(InvalidInputError, match=r"unknown keys \['half_life'\] in config section 'feedback'"):
        RayrecConfig.from_dict({"index": {"dim": 8}, "feedback": {"half_life": 3}})
    with pytest.raises(InvalidInputError, match="needs an 'index' section"):
        RayrecConfig.from_dict({"num_shards": 2})
    with pytest.raises(InvalidInputError, match="config section 'index' must be a mapping, got int"):
        RayrecConfig.from_dict({"index": 8})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_shards": 0}, "num_shards must be a positive integer"),
        ({"num_user_actors": 1.5}, "num_user_actors must be a positive integer"),
        ({"shard_retries": -1}, "shard_retries must be an integer >= 0"),
        ({"shard_timeout_s": 0}, "shard_timeout_s must be a number > 0"),
        ({"write_timeout_s": -2.0}, "write_timeout_s must be a number > 0"),
        ({"load_timeout_s": float("nan")}, "load_timeout_s must be a number > 0"),
        ({"on_shard_failure": "ignore"}, r"on_shard_failure must be one of \('partial', 'raise'\), got 'ignore'"),
        ({"shard_num_cpus": -0.1}, "shard_num_cpus must be a finite number >= 0"),
        ({"namespace": ""}, "namespace must be a non-empty string"),
        ({"max_batch_queries": 0}, "max_batch_queries must be a positive integer"),
    ],
)
def test_rayrec_config_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RayrecConfig(index=IndexConfig(dim=8), **kwargs)


def test_rayrec_config_needs_config_objects() -> None:
    with pytest.raises(InvalidInputError, match="index must be an IndexConfig, got dict"):
        RayrecConfig(index={"dim": 8})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="feedback must be a FeedbackRule, got dict"):
        RayrecConfig(index=IndexConfig(dim=8), feedback={})  # type: ignore[arg-type]


# ----- request checks ---------------------------------------------------------
def test_check_k() -> None:
    assert check_k(5, 10) == 5 and check_k(np.int32(10), 10) == 10
    with pytest.raises(InvalidInputError, match="k=11 is above the configured maximum max_k=10"):
        check_k(11, 10)
    with pytest.raises(InvalidInputError, match="k must be >= 1, got 0"):
        check_k(0, 10)
    with pytest.raises(InvalidInputError, match="k must be an integer, got float"):
        check_k(2.0, 10)
    with pytest.raises(InvalidInputError, match="k must be an integer, got bool"):
        check_k(True, 10)


def test_check_event() -> None:
    for event in EVENT_TYPES:
        assert check_event(event) == event
    accepted = "accepted: click, like, purchase, skip, dislike"
    with pytest.raises(InvalidInputError, match=f"unknown event type 'share'; {accepted}"):
        check_event("share")
    with pytest.raises(InvalidInputError, match="unknown event type None"):
        check_event(None)


def test_check_ids() -> None:
    assert check_id("a") == "a" and check_id(7) == "7" and check_id(np.int64(8)) == "8"
    assert check_ids(["a", 2]) == ["a", "2"]
    with pytest.raises(InvalidInputError, match="item id must be a non-empty string, got ''"):
        check_id("")
    with pytest.raises(InvalidInputError, match="user id must be a non-empty string, got '  '"):
        check_id("  ", "user id")
    with pytest.raises(InvalidInputError, match="item id must be a non-empty string .or an integer., got float"):
        check_id(1.5)
    with pytest.raises(InvalidInputError, match="got bool"):
        check_id(False)
    with pytest.raises(InvalidInputError, match="expected a list of item ids, got a single string 'abc'"):
        check_ids("abc")


def test_check_vectors_normalises_and_names_bad_rows() -> None:
    out = check_vectors([[3, 4], [0, 2]], 2)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 1]], atol=1e-7)
    np.testing.assert_array_equal(check_vectors([3, 4], 2, normalise=False), np.array([[3, 4]], np.float32))
    assert check_vectors(np.empty((0, 2)), 2).shape == (0, 2)
    with pytest.raises(DimensionMismatchError, match="query dimension is 3, but the index holds 2-d vectors"):
        check_vectors([[1, 2, 3]], 2, what="query")
    with pytest.raises(InvalidInputError, match="vector at position 2 contains NaN or infinite values"):
        check_vectors([[1, 0], [0, 1], [np.inf, 0]], 2)
    with pytest.raises(InvalidInputError, match="vector at position 1 is all zeros"):
        check_vectors([[1, 0], [0, 0]], 2)
    with pytest.raises(InvalidInputError, match=r"vectors must have shape \(n, 2\) or \(2,\), got shape \(1, 1, 2\)"):
        check_vectors([[[1, 0]]], 2)
    with pytest.raises(InvalidInputError, match="vectors must be numeric arrays"):
        check_vectors([["a", "b"]], 2)


def test_check_categories_and_exclude() -> None:
    assert check_categories(None) is None
    assert check_categories(["a", "b"]) == ["a", "b"] and check_categories(("a",)) == ["a"]
    with pytest.raises(InvalidInputError, match="category filter must be a list of strings, got 'books'"):
        check_categories("books")
    with pytest.raises(InvalidInputError, match="empty list: it would match nothing; pass None"):
        check_categories([])
    with pytest.raises(InvalidInputError, match="category filter entries must be strings, got 3"):
        check_categories(["a", 3])
    assert check_exclude(None) is None and check_exclude({"x"}) == ["x"] and check_exclude([1]) == ["1"]
    with pytest.raises(InvalidInputError, match="exclude must be a list of item ids, got a single string 'x'"):
        check_exclude("x")


def test_per_query_expands_one_or_checks_each() -> None:
    assert per_query(None, 3, check_categories, "category") == [None, None, None]
    assert per_query(["a", "b"], 2, check_categories, "category") == [["a", "b"], ["a", "b"]]
    assert per_query([["a"], None, ("b",)], 3, check_categories, "category") == [["a"], None, ["b"]]
    assert per_query(["x", "y"], 3, check_exclude, "exclude") == [["x", "y"]] * 3
    with pytest.raises(InvalidInputError, match="got 2 category lists for 3 queries; give one per query or one for"):
        per_query([["a"], ["b"]], 3, check_categories, "category")
    with pytest.raises(InvalidInputError, match="empty list"):
        per_query([["a"], []], 2, check_categories, "category")


def test_huge_and_tiny_vectors_normalise_in_float64() -> None:
    from rayrec.validation import check_vectors

    big = np.full((1, 16), 1e20, np.float32)
    np.testing.assert_allclose(check_vectors(big, 16), np.full((1, 16), 0.25), atol=1e-7)
    tiny = np.full((1, 16), 1e-25, np.float32)
    np.testing.assert_allclose(check_vectors(tiny, 16), np.full((1, 16), 0.25), atol=1e-7)
    np.testing.assert_allclose(check_vectors(np.full((1, 16), 3e38, np.float32), 16), np.full((1, 16), 0.25), atol=1e-7)


def test_id_lists_must_be_lists() -> None:
    from rayrec.validation import check_ids

    with pytest.raises(InvalidInputError, match="got a single string 'sku-7'; wrap it in a list"):
        check_ids("sku-7")
    with pytest.raises(InvalidInputError, match="expected a list of item ids, got NoneType"):
        check_ids(None)


def test_factories_with_a_transform_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="starts with a transform"):
        IndexConfig(dim=64, factory="PCA16,HNSW32")
