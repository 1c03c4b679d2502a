"""fan_out deadlines and retries, and Coalescer batching, on a plain asyncio loop."""

from __future__ import annotations

import asyncio

import pytest

from rayrec.exceptions import InvalidInputError, ItemNotFoundError, root_cause
from rayrec.routing.fanout import Coalescer, FanOutResult, describe, fan_out

DEADLINE_S = 0.05


class Target:
    """A callee that answers `value`, failing or hanging on the first `bad_tries` calls."""

    def __init__(self, value: int, bad_tries: int = 0, how: str = "ok") -> None:
        self.value = value
        self.bad_tries = bad_tries
        self.how = how
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.bad_tries:
            if self.how == "slow":
                await asyncio.sleep(10)  # cancelled by the deadline long before this
            else:
                raise ConnectionError(f"shard {self.value} is down")
        return self.value


def test_all_answer() -> None:
    targets = [Target(i) for i in range(4)]
    result = asyncio.run(fan_out(targets, DEADLINE_S, retries=1))
    assert result.results == [0, 1, 2, 3]
    assert result.errors == {} and result.failed == []
    assert [t.calls for t in targets] == [1, 1, 1, 1]


def test_slow_target_times_out_after_one_retry() -> None:
    slow = Target(1, bad_tries=100, how="slow")
    targets = [Target(0), slow, Target(2)]
    result = asyncio.run(fan_out(targets, DEADLINE_S, retries=1))
    assert result.results == [0, None, 2]
    assert result.failed == [1]
    assert isinstance(result.errors[1], TimeoutError)
    assert describe(result.errors[1]) == f"TimeoutError: no answer within {DEADLINE_S:g} s (2 tries)"
    assert slow.calls == 2


def test_slow_once_then_fast_is_retried_to_success() -> None:
    flaky = Target(7, bad_tries=1, how="slow")
    result = asyncio.run(fan_out([flaky], DEADLINE_S, retries=1))
    assert result.results == [7] and result.errors == {}
    assert flaky.calls == 2


def test_failing_once_then_succeeding_is_retried() -> None:
    flaky = Target(5, bad_tries=1, how="raise")
    steady = Target(6)
    result = asyncio.run(fan_out([flaky, steady], DEADLINE_S, retries=1))
    assert result.results == [5, 6] and result.errors == {}
    assert (flaky.calls, steady.calls) == (2, 1)


def test_always_failing_records_the_last_error() -> None:
    dead = Target(3, bad_tries=100, how="raise")
    result = asyncio.run(fan_out([Target(0), dead], DEADLINE_S, retries=2))
    assert result.results == [0, None]
    assert list(result.errors) == [1] and isinstance(result.errors[1], ConnectionError)
    assert describe(result.errors[1]) == "ConnectionError: shard 3 is down"
    assert result.caller_error() is None
    assert dead.calls == 3


def test_no_retries_means_one_try() -> None:
    flaky = Target(1, bad_tries=1, how="raise")
    result = asyncio.run(fan_out([flaky], DEADLINE_S, retries=0))
    assert result.results == [None] and result.failed == [0]
    assert flaky.calls == 1


class RayTaskErrorLike(Exception):
    """Stands in for Ray's wrapper of an actor's error: the actor's own error is .cause."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"task failed:\n{cause}")
        self.cause = cause


class BadRequestTarget(Target):
    async def __call__(self) -> int:
        self.calls += 1
        raise RayTaskErrorLike(InvalidInputError(f"k=0 is not allowed (target {self.value})"))


def test_caller_errors_are_not_retried_and_are_unwrapped() -> None:
    bad = BadRequestTarget(2)
    result = asyncio.run(fan_out([Target(0), Target(1, bad_tries=1), bad], DEADLINE_S, retries=3))
    assert bad.calls == 1, "a bad request fails the same way every time: no retry"
    assert result.results == [0, 1, None]
    error = result.errors[2]
    assert type(error) is InvalidInputError and str(error) == "k=0 is not allowed (target 2)"
    assert result.caller_error() is error


def test_caller_error_is_reported_before_target_failures() -> None:
    missing = ItemNotFoundError("item 'x' not found")
    result = FanOutResult(results=[None, None, None], errors={2: missing, 0: ConnectionError("down")})
    assert result.failed == [0, 2]
    assert result.caller_error() is missing
    assert describe(ValueError("first line\nlast line")) == "ValueError: last line"
    assert describe(ValueError()) == "ValueError: "


def test_root_cause_unwraps_nested_wrappers() -> None:
    inner = KeyError("k")
    assert root_cause(RayTaskErrorLike(RayTaskErrorLike(inner))) is inner
    plain = ValueError("v")
    assert root_cause(plain) is plain


def test_a_call_that_raises_before_awaiting_is_retried() -> None:
    attempts = []

    def call():  # fails while building the awaitable, e.g. a dead actor handle
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("handle is dead")
        return asyncio.sleep(0, result="ok")

    result = asyncio.run(fan_out([call], DEADLINE_S, retries=1))
    assert result.results == ["ok"] and result.errors == {} and len(attempts) == 2


def test_fan_out_of_nothing() -> None:
    assert asyncio.run(fan_out([], DEADLINE_S, retries=1)) == FanOutResult(results=[], errors={})


# ----- Coalescer --------------------------------------------------------------
class BatchRun:
    """A batch function that squares numbers, recording each batch and the overlap of runs."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_running = 0
        self.fail_on = fail_on

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(list(batch))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(0.001)  # yield, so more submits queue up meanwhile
            if self.fail_on is not None and self.fail_on in batch:
                raise RuntimeError(f"batch with {self.fail_on} failed")
            return [r * r for r in batch]
        finally:
            self.running -= 1


def test_concurrent_submits_are_batched_and_routed() -> None:
    run = BatchRun()

    async def main() -> list[int]:
        coalescer = Coalescer(run, max_size=16)
        results = await asyncio.gather(*(coalescer.submit(i) for i in range(50)))
        assert coalescer.batches_run == len(run.batches)
        return results

    results = asyncio.run(main())
    assert results == [i * i for i in range(50)]
    # the first request goes out alone at once; the rest queue behind it
    assert [len(b) for b in run.batches] == [1, 16, 16, 16, 1]
    assert sorted(r for b in run.batches for r in b) == list(range(50))
    assert run.most_running == 1  # one batch in flight


def test_submits_during_a_run_form_the_next_batch() -> None:
    run = BatchRun()

    async def main() -> list[int]:
        coalescer = Coalescer(run, max_size=100)
        first = asyncio.ensure_future(coalescer.submit(1))
        await asyncio.sleep(0)  # let the lone request go out at once
        await asyncio.sleep(0)
        later = [asyncio.ensure_future(coalescer.submit(i)) for i in range(2, 12)]
        return await asyncio.gather(first, *later)

    results = asyncio.run(main())
    assert results == [i * i for i in range(1, 12)]
    assert run.batches == [[1], list(range(2, 12))]


def test_batch_error_reaches_every_caller_of_that_batch_only() -> None:
    run = BatchRun(fail_on=13)

    async def main() -> list[object]:
        coalescer = Coalescer(run, max_size=10)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(25)), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [len(b) for b in run.batches] == [1, 10, 10, 4]
    for i, out in enumerate(outcomes):
        if 11 <= i < 21:  # the batch holding 13
            assert isinstance(out, RuntimeError) and str(out) == "batch with 13 failed"
        else:
            assert out == i * i


def test_wrong_result_count_fails_the_batch() -> None:
    async def short(batch: list[int]) -> list[int]:
        await asyncio.sleep(0.001)  # yield, so the other submits queue up meanwhile
        return batch[:-1]

    async def main() -> list[object]:
        coalescer = Coalescer(short, max_size=8)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(main())
    # the lone first request, then the two that queued behind it
    assert isinstance(outcomes[0], RuntimeError) and "returned 0 results for 1 request" in str(outcomes[0])
    assert all(isinstance(o, RuntimeError) and "returned 1 results for 2 requests" in str(o) for o in outcomes[1:])


def test_size_of_limits_a_batch_by_weight() -> None:
    run = BatchRun()

    async def main() -> list[int]:
        coalescer = Coalescer(run, max_size=10, size_of=lambda r: r)
        return await asyncio.gather(*(coalescer.submit(r) for r in [4, 5, 3, 12, 1]))

    assert asyncio.run(main()) == [16, 25, 9, 144, 1]
    # 4 goes out alone at once; then 5+3 fits 10, 12 would not; an oversized request goes alone.
    assert run.batches == [[4], [5, 3], [12], [1]]


def test_more_batches_in_flight_when_allowed() -> None:
    run = BatchRun()

    async def main() -> list[int]:
        coalescer = Coalescer(run, max_size=10, max_in_flight=2)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(40)))

    assert asyncio.run(main()) == [i * i for i in range(40)]
    assert run.most_running == 2
    # two lone requests fill the two slots at once; the other 38 queue in batches of at most 10
    assert sorted(len(b) for b in run.batches) == [1, 1, 8, 10, 10, 10]


def test_coalescer_rejects_bad_limits() -> None:
    async def run(batch: list[int]) -> list[int]:
        return batch

    with pytest.raises(ValueError, match="max_size and max_in_flight must be >= 1"):
        Coalescer(run, max_size=0)
    with pytest.raises(ValueError, match="max_size and max_in_flight must be >= 1"):
        Coalescer(run, max_size=4, max_in_flight=0)


def test_an_exception_as_a_result_fails_only_its_own_request() -> None:
    async def run(batch: list[int]) -> list[object]:
        await asyncio.sleep(0.001)
        return [ValueError(f"bad {r}") if r % 2 else r * 10 for r in batch]

    async def main() -> list[object]:
        coalescer = Coalescer(run, max_size=8)
        return await asyncio.gather(*(coalescer.submit(i) for i in range(6)), return_exceptions=True)

    outcomes = asyncio.run(main())
    for i, out in enumerate(outcomes):
        if i % 2:
            assert isinstance(out, ValueError) and str(out) == f"bad {i}"
        else:
            assert out == i * 10
