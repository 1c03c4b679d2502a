"""The text-encoder deployment: TextEncoder behind dynamic batching (@serve.batch)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import numpy as np
from ray import serve

from rayrec import constants as C
from rayrec import metrics
from rayrec.encoder import TextEncoder, check_texts
from rayrec.exceptions import InvalidInputError


@serve.deployment(max_ongoing_requests=C.ENCODER_MAX_ONGOING_REQUESTS)
class Encoder:
    """Encodes lists of texts; concurrent requests are batched together.

    user_config: {"max_batch_size": texts per forward batch, "batch_wait_timeout_s":
    how long a batch waits to fill}; both change without a redeploy.
    """

    def __init__(self, model_dir: str | None = None, device: str | None = None, threads: int | None = None) -> None:
        # torch's OpenMP threads sleep between batches instead of spinning on the cores Serve's event loop
        # needs (bench/encoder.py, 2 cores: 0.36-0.41 -> 0.46-0.51 of the plain class). OpenMP reads this
        # when torch loads, which is here (nothing this replica imported before loads torch). Set here, not
        # by a runtime_env: actors the replica starts would inherit one, and each worker would then start
        # through Ray's setup_worker, twice the CPU.
        loaded = "torch" in sys.modules  # then its OpenMP has read the environment already
        if not loaded:
            os.environ["OMP_WAIT_POLICY"] = C.ENCODER_OMP_WAIT_POLICY
        self._omp_wait_policy = None if loaded else C.ENCODER_OMP_WAIT_POLICY
        import torch

        # Ray sets OMP_NUM_THREADS=1 in its workers; a CPU encoder wants the node's cores
        # (threads=None: all of them), since its forward pass is where the time goes.
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.encoder = TextEncoder(model_dir=model_dir, device=device)
        self._max_batch = C.ENCODER_BATCH_SIZE
        self._batches = 0
        self._texts = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Applies user_config: max_batch_size and batch_wait_timeout_s."""
        unknown = sorted(set(config) - {"max_batch_size", "batch_wait_timeout_s"})
        if unknown:
            raise InvalidInputError(f"unknown encoder user_config keys {unknown}")
        if "max_batch_size" in config:
            self._max_batch = int(config["max_batch_size"])
            if self._max_batch < 1:
                raise InvalidInputError(f"max_batch_size must be >= 1, got {self._max_batch}")
            self._encode_batch.set_max_batch_size(self._max_batch)
        if "batch_wait_timeout_s" in config:
            self._encode_batch.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))

    @serve.batch(
        max_batch_size=C.ENCODER_BATCH_SIZE,
        batch_wait_timeout_s=C.ENCODER_BATCH_WAIT_S,
        batch_size_fn=lambda requests: sum(len(texts) for _, texts in requests),
    )
    async def _encode_batch(self, requests: list[tuple[float, list[str]]]) -> list[np.ndarray | Exception]:
        """One forward batch over (queued_at, texts) requests; per request, its vectors."""
        now = time.perf_counter()
        for queued_at, _ in requests:
            metrics.encoder_queue_wait_ms().observe((now - queued_at) * 1000)
        flat = [text for _, texts in requests for text in texts]
        metrics.encoder_batch_size().observe(len(flat))
        self._batches += 1
        self._texts += len(flat)
        # Off the event loop: requests keep queueing (and batching) while the model runs.
        try:
            vectors = await asyncio.to_thread(self.encoder.encode, flat)
        except Exception:
            if len(requests) == 1:
                raise
            # One caller's input must not fail the others batched with it: each request alone, and the
            # failing one gets its own error (Serve hands each caller its element of the list).
            return [await self._encode_alone(texts) for _, texts in requests]
        out, start = [], 0
        for _, texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    async def _encode_alone(self, texts: list[str]) -> np.ndarray | Exception:
        try:
            return await asyncio.to_thread(self.encoder.encode, texts)
        except Exception as exc:
            return exc

    async def encode(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32 unit vectors of n texts.

        A request longer than a batch is cut into batch-sized pieces, which queue
        (and batch) like requests of their own.
        """
        texts = check_texts(texts, most=C.ENCODER_MAX_TEXTS_PER_CALL)
        size = self._max_batch
        pieces = [texts[i : i + size] for i in range(0, len(texts), size)]
        now = time.perf_counter()
        parts = await asyncio.gather(*(self._encode_batch((now, p)) for p in pieces))
        failed = next((p for p in parts if isinstance(p, Exception)), None)
        if failed is not None:
            raise failed
        return parts[0] if len(parts) == 1 else np.vstack(parts)

    def dim(self) -> int:
        """The output dimension of the model."""
        return self.encoder.dim

    def info(self) -> dict[str, Any]:
        """Model directory, device, precision, dimension, batches and texts encoded so far, OpenMP's wait policy."""
        e = self.encoder
        return {
            "model_dir": e.model_dir,
            "device": e.device,
            "fp16": e.fp16,
            "dim": e.dim,
            "batches": self._batches,
            "texts": self._texts,
            "omp_wait_policy": self._omp_wait_policy,  # as torch's OpenMP read it at load (None: loaded before)
        }
