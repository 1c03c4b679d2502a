"""A user actor's part in model swaps: which item space its users' vectors are in, and the pause a swap holds.

A model swap (rayrec.system.model_swap) pauses every user actor before the router switches to the new
item space, and resumes them after: each then re-derives its users in the space the router serves. This
class is that state machine, plain async Python over the callables its actor gives it (ask the router for
its space; re-derive every user in a space; snapshot; ask the router whether a swap is still pending), so
it is unit-tested without Ray. The actor's public calls run inside `serving()`: they wait while a swap
holds the actor, and never see a state that is in another space than the router's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from rayrec.exceptions import LayoutChangedError
from rayrec.system.resharding import WriteGate

Space = dict[str, Any]


class SwapState:
    """The item space of one user actor's state, and the model-swap pause over its calls."""

    def __init__(
        self,
        ask_space: Callable[[], Awaitable[Space | None]],
        rederive: Callable[[Space], Awaitable[int]],
        snapshot: Callable[[], Awaitable[None]],
        swap_pending: Callable[[str], Awaitable[bool]],
        checked: Callable[[], None],
        recovered: bool,
        adopt: Callable[[Space], Awaitable[None]] | None = None,
    ) -> None:
        """recovered: the state came from storage, so it may be in another space than the router's (checked first).

        ask_space: the router's item space now. rederive(space): every user re-derived in space, returns users.
        snapshot: records the state (and version() as its space) durably; a no-op without storage.
        swap_pending(swap): whether the router is still staged or switching for that swap.
        checked(): called each time the state was checked against the router's space (a swap may have
        retired the shards the actor searched: it asks for the current ones).
        adopt(space): takes what goes with a space besides the vectors (its user model); called each time the
        state's space is taken from the router, before a re-derivation in it. With it, the router's space is
        asked before the first call is served, recovered or not (an actor restarted after a swap, without
        storage, must not move users by the model it was configured with).
        """
        self._ask_space, self._rederive, self._snapshot = ask_space, rederive, snapshot
        self._swap_pending, self._checked = swap_pending, checked
        self._adopt = adopt
        self.space: Space | None = None  # the space the vectors are in, asked of the router on first use
        self.recorded: str | None = None  # with storage: the version the recovered snapshot names
        self.gate = WriteGate()  # held by a pause
        self.paused: tuple[str, asyncio.TimerHandle] | None = None  # (swap id, the timer that ends it) while held
        # Whether the state may be in another space than the router's (after a restart from storage, or a
        # pause): checked, and re-derived if so, before the next call is served; and whether a re-derived
        # state still waits for its snapshot.
        self.stale = recovered or adopt is not None
        self.unsaved = False
        self._lock = asyncio.Lock()

    def version(self) -> str | None:
        """The version of the space the state is in (the recovered one until the router is asked)."""
        return self.space.get("version") if self.space is not None else self.recorded

    async def current(self) -> Space | None:
        """The space the state is in, asked of the router once."""
        if self.space is None:
            await self._take(await self._ask_space())
        return self.space

    async def _take(self, space: Space | None) -> None:
        """The state is in space from now on (None: the router has none yet)."""
        if space is not None and self._adopt is not None:
            await self._adopt(space)
        self.space = None if space is None else dict(space)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """One public call: waits while a swap holds the actor, and for the state to be in the current space."""
        async with self.gate.write():
            await self.ensure()
            yield

    async def ensure(self) -> int:
        """If the state may be in another space than the router's, re-derives every user in the router's
        space now, before anything is served; then, until it succeeds, snapshots the result. Returns users
        re-derived.

        A failure leaves the work due: the next call tries again (it never serves a mix of two spaces).
        """
        if not (self.stale or self.unsaved):
            return 0
        async with self._lock:
            users = 0
            if self.stale:
                now = await self._ask_space()
                mine = self.version()
                if now is not None and mine is not None and now.get("version") != mine:
                    if self._adopt is not None:
                        await self._adopt(now)  # the new space's user model re-derives its users
                    users = await self._rederive(now)
                    self.space = dict(now)
                    self.unsaved = True
                elif now is not None and self.space is None:
                    await self._take(now)
                self._checked()
                self.stale = False
            if self.unsaved:
                await self._snapshot()
                self.unsaved = False
            return users

    async def pause(self, swap: str, timeout_s: float) -> None:
        """Holds every call until resume(swap), once those in flight finish, then snapshots.

        If resume does not come within timeout_s, the pause ends by itself unless the router is still
        staged or switching for this swap (see _expire). Raises LayoutChangedError if another swap holds it.
        """
        if self.paused is not None:
            raise LayoutChangedError("this user actor is paused for another model swap")
        await self.ensure()
        await self.current()
        await self.gate.hold()
        if self.paused is not None:  # another swap paused it while this one waited for calls in flight
            self.gate.release()
            raise LayoutChangedError("this user actor is paused for another model swap")
        self.paused = (swap, self._timer(swap, timeout_s))
        try:
            await self._snapshot()  # a restart after the switch then knows its state is in the old space
        except BaseException:
            await self.resume(swap)
            raise

    def _timer(self, swap: str, timeout_s: float) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(timeout_s, lambda: asyncio.ensure_future(self._expire(swap, timeout_s)))

    async def _expire(self, swap: str, timeout_s: float) -> None:
        """A pause's timer: ends it, unless the router is still staged or switching for this swap (then waits on)."""
        if self.paused is None or self.paused[0] != swap:
            return
        try:
            pending = await self._swap_pending(swap)
        except Exception:
            pending = False
        if pending and self.paused is not None and self.paused[0] == swap:
            self.paused = (swap, self._timer(swap, timeout_s))
            return
        await self.resume(swap)

    async def resume(self, swap: str) -> dict[str, Any]:
        """Ends swap's pause. If the router switched to another space meanwhile, every user is first
        re-derived in it (and snapshotted); should that fail, the calls let in retry it first.

        Without this swap's pause (the actor restarted, or its pause ended by time), it still checks,
        with calls held, that the state is in the router's space.

        Returns {"resumed": whether this swap's pause was ended, "users": users re-derived}.
        """
        if self.paused is None or self.paused[0] != swap:
            async with self.gate.closed():
                self.stale = True
                return {"resumed": False, "users": await self.ensure()}
        _, timer = self.paused
        timer.cancel()
        self.paused = None
        self.stale = True
        try:
            users = await self.ensure()
        finally:
            self.gate.release()
        return {"resumed": True, "users": users}
