"""RouterClient: one process's concurrent searches, coalesced into few router calls."""

from __future__ import annotations

from typing import Any

from rayrec import constants as C
from rayrec.routing.fanout import Coalescer
from rayrec.routing.query import SearchRequest, make_request
from rayrec.routing.topk import SearchResult
from rayrec.routing.wire import pack_requests, unpack_answers


class RouterClient:
    """Searches through a router handle from an asyncio process (a server, a user actor).

    Every Ray call costs about a millisecond of CPU on each side, so concurrent
    searches of this process travel together: while one batch is at the router,
    new ones queue and leave as the next single call. Input is checked here,
    before anything is sent.
    """

    def __init__(self, router: Any, dim: int, max_k: int, max_batch_queries: int = C.DEFAULT_MAX_BATCH_QUERIES) -> None:
        self._router = router
        self._dim = dim
        self._max_k = max_k
        self._coalescer: Coalescer[SearchRequest, SearchResult] = Coalescer(
            self._send,
            max_size=max_batch_queries,
            size_of=lambda r: r.rows,
            max_in_flight=C.CLIENT_BATCHES_IN_FLIGHT,
        )

    @property
    def calls_sent(self) -> int:
        """Router calls made so far (fewer than searches under concurrency)."""
        return self._coalescer.batches_run

    async def search(
        self, queries: Any, k: int, exclude: Any = None, categories: Any = None, with_metadata: bool = False
    ) -> SearchResult:
        """Global top-k per query vector (arguments as in rayrec.routing.query.make_request)."""
        request = make_request(queries, k, exclude, categories, with_metadata, dim=self._dim, max_k=self._max_k)
        return await self._coalescer.submit(request)

    async def _send(self, requests: list[SearchRequest]) -> list[SearchResult | BaseException]:
        blob = pack_requests([(r.queries, r.k, r.excludes, r.categories, r.with_metadata) for r in requests])
        return unpack_answers(await self._router.search_many.remote(blob))
