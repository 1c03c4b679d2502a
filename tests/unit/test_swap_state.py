"""rayrec.users.swap_state.SwapState (a user actor's part in model swaps) over a fake router, without Ray."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rayrec.exceptions import LayoutChangedError
from rayrec.users.swap_state import SwapState

from ._fakes import turns, until


class FakeActor:
    """What a user actor gives SwapState: the router's space, re-derivation, snapshots; each call recorded."""

    def __init__(self, space: str | None = "v1") -> None:
        self.router_space = None if space is None else {"version": space, "path": f"/m/{space}"}
        self.pending: set[str] = set()  # swaps the router is still staged or switching for
        self.asked_pending = 0
        self.rederived: list[str] = []
        self.snapshots = 0
        self.checks = 0
        self.fail_rederive = 0  # how many re-derivations fail next
        self.state = SwapState(self.ask, self.rederive, self.snapshot, self.swap_pending, self.checked, False)

    async def ask(self) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        return None if self.router_space is None else dict(self.router_space)

    async def rederive(self, space: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        if self.fail_rederive:
            self.fail_rederive -= 1
            raise RuntimeError("the model is unreadable")
        self.rederived.append(space["version"])
        return 7

    async def snapshot(self) -> None:
        self.snapshots += 1

    async def swap_pending(self, swap: str) -> bool:
        self.asked_pending += 1
        return swap in self.pending

    def checked(self) -> None:
        self.checks += 1

    async def call(self, log: list[str], name: str, hold: asyncio.Event | None = None) -> str | None:
        """One public call of the actor: runs inside serving(); answers the space it saw."""
        async with self.state.serving():
            if hold is not None:
                await hold.wait()
            log.append(name)
            return (await self.state.current() or {}).get("version")


def test_a_pause_waits_for_calls_in_flight_holds_new_ones_and_resume_rederives_in_the_switched_space() -> None:
    async def run() -> None:
        actor, log = FakeActor("v1"), []
        hold = asyncio.Event()
        in_flight = asyncio.ensure_future(actor.call(log, "in flight", hold))
        await asyncio.sleep(0)
        pause = asyncio.ensure_future(actor.state.pause("swap-1", timeout_s=60))
        await turns()
        assert not pause.done()  # waits for the call in flight
        hold.set()
        assert await in_flight == "v1"
        await pause
        assert actor.snapshots == 1  # the old space recorded before the switch
        held = asyncio.ensure_future(actor.call(log, "held"))
        await turns()
        assert not held.done() and log == ["in flight"]
        with pytest.raises(LayoutChangedError, match="another model swap"):
            await actor.state.pause("swap-2", timeout_s=60)
        actor.router_space = {"version": "v2", "path": "/m/v2"}  # the router switched
        assert await actor.state.resume("swap-1") == {"resumed": True, "users": 7}
        assert actor.rederived == ["v2"] and actor.snapshots == 2  # re-derived, then snapshotted in v2
        assert await held == "v2" and log == ["in flight", "held"]
        assert actor.state.version() == "v2" and actor.state.paused is None

    asyncio.run(run())


def test_a_resume_in_an_unchanged_space_rederives_nothing_and_an_unknown_swap_only_checks() -> None:
    async def run() -> None:
        actor = FakeActor("v1")
        await actor.state.pause("swap-1", timeout_s=60)
        assert await actor.state.resume("swap-1") == {"resumed": True, "users": 0}
        assert actor.rederived == [] and actor.checks == 1
        assert await actor.state.resume("not-paused") == {"resumed": False, "users": 0}
        assert actor.checks == 2 and actor.state.gate.is_open

    asyncio.run(run())


def test_a_failed_rederivation_serves_nothing_until_a_later_call_succeeds() -> None:
    async def run() -> None:
        actor, log = FakeActor("v1"), []
        await actor.call(log, "first")
        await actor.state.pause("swap-1", timeout_s=60)
        actor.router_space = {"version": "v2", "path": "/m/v2"}
        actor.fail_rederive = 2
        with pytest.raises(RuntimeError, match="unreadable"):
            await actor.state.resume("swap-1")
        assert actor.state.gate.is_open and actor.state.version() == "v1"
        with pytest.raises(RuntimeError, match="unreadable"):  # the call tries again first, never serves v1
            await actor.call(log, "second")
        assert await actor.call(log, "third") == "v2"
        assert log == ["first", "third"] and actor.rederived == ["v2"]

    asyncio.run(run())


def test_a_recovered_state_in_an_older_space_is_rederived_before_its_first_call() -> None:
    async def run() -> None:
        actor, log = FakeActor("v2"), []
        actor.state = SwapState(actor.ask, actor.rederive, actor.snapshot, actor.swap_pending, actor.checked, True)
        actor.state.recorded = "v1"  # what the snapshot recovered from storage names
        assert await actor.call(log, "first") == "v2"
        assert actor.rederived == ["v2"] and actor.snapshots == 1
        await actor.call(log, "second")
        assert actor.rederived == ["v2"] and actor.snapshots == 1  # once

    asyncio.run(run())


def test_a_pause_ends_by_itself_once_the_router_no_longer_holds_its_swap() -> None:
    async def run() -> None:
        actor, log = FakeActor("v1"), []
        actor.pending.add("swap-1")
        await actor.state.pause("swap-1", timeout_s=0.05)
        # several timeouts, each asking the router: it still stages this swap, so the pause holds
        await until(lambda: actor.asked_pending >= 3, what="three expiry checks")
        assert actor.state.paused is not None and not actor.state.gate.is_open
        actor.pending.clear()  # the router dropped the swap (its coordinator died)
        # resume() drops the pause, checks the space with the router, then opens the gate: wait for both
        await until(lambda: actor.state.paused is None and actor.state.gate.is_open, what="the pause ending by itself")
        assert await actor.call(log, "after") == "v1"

    asyncio.run(run())


def test_what_goes_with_a_space_is_adopted_at_the_first_call_and_before_a_rederivation_in_a_new_one() -> None:
    async def run() -> None:
        actor, log = FakeActor("v1"), []
        order: list[str] = []

        async def adopt(space: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            order.append(f"adopt {space['version']}")

        async def rederive(space: dict[str, Any]) -> int:
            order.append(f"rederive {space['version']}")
            return await FakeActor.rederive(actor, space)

        # Not recovered from storage, and still the router's space is asked before the first call is served
        # (a user actor restarted without storage after a swap must take that space's user model).
        actor.state = SwapState(actor.ask, rederive, actor.snapshot, actor.swap_pending, actor.checked, False, adopt)
        assert await actor.call(log, "first") == "v1" and order == ["adopt v1"]
        await actor.call(log, "second")
        assert order == ["adopt v1"]  # once
        await actor.state.pause("swap-1", timeout_s=60)
        actor.router_space = {"version": "v2", "path": "/m/v2"}
        assert (await actor.state.resume("swap-1"))["users"] == 7
        assert order == ["adopt v1", "adopt v2", "rederive v2"]  # the new space's model re-derives its users
        # Recovered in the router's space: adopted, nothing re-derived.
        order.clear()
        actor.state = SwapState(actor.ask, rederive, actor.snapshot, actor.swap_pending, actor.checked, True, adopt)
        actor.state.recorded = "v2"
        assert await actor.call(log, "third") == "v2" and order == ["adopt v2"]

    asyncio.run(run())
