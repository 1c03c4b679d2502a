"""TextEncoder against sentence-transformers' own all-MiniLM-L6-v2 pipeline, on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from rayrec.encoder import TextEncoder, check_texts, default_model_dir
from rayrec.exceptions import InvalidInputError

TEXTS = [
    "Toy Story (1995). Animation, Children's, Comedy",
    "GoldenEye (1995). Action, Adventure, Thriller",
    "A Nightmare on Elm Street (1984). Horror",
    "a short one",
    "word " * 300,  # longer than max_length: truncated, not an error
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(device="cpu", batch_size=2)


def test_matches_sentence_transformers(encoder: TextEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(default_model_dir(), device="cpu")
    reference.max_seq_length = encoder.max_length
    expected = reference.encode(TEXTS, normalize_embeddings=True)
    got = encoder.encode(TEXTS)
    assert got.shape == (len(TEXTS), 384) and encoder.dim == 384
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batches_do_not_change_the_answer(encoder: TextEncoder) -> None:
    one_by_one = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(encoder.encode(TEXTS), one_by_one, atol=1e-5)


def test_related_texts_score_higher(encoder: TextEncoder) -> None:
    v = encoder.encode(["a scary horror movie", "Halloween (1978). Horror", "Babe (1995). Children's, Comedy"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.05


def test_bad_texts_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="texts must be a list of strings, got str"):
        check_texts("one text")
    with pytest.raises(InvalidInputError, match="texts is empty"):
        check_texts([])
    with pytest.raises(InvalidInputError, match="text at position 1 must be a non-empty string"):
        check_texts(["ok", "  "])
    with pytest.raises(InvalidInputError, match="3 texts in one call; at most 2"):
        check_texts(["a", "b", "c"], most=2)


def test_a_directory_without_a_model_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="not a Hugging Face model directory"):
        TextEncoder(model_dir=str(tmp_path))


def test_any_local_model_directory_sets_the_dimension(tmp_path) -> None:
    """Another (here a small, randomly initialised 48-d BERT) local model directory: its own dimension, end to end
    from AppArgs to the vectors, with the mean pooling computed here by hand."""
    import torch
    from rayrec.serve_app.app import AppArgs
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rayrec.encoder import encoder_dim

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=96))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert encoder_dim(str(tmp_path)) == 48 and encoder_dim() == 384
    assert AppArgs(model_dir=str(tmp_path)).resolved().dim == 48
    with pytest.raises(InvalidInputError, match="dim 16 differs from the encoder's 48"):
        AppArgs(model_dir=str(tmp_path), dim=16).resolved()  # the index would refuse its vectors
    got = TextEncoder(model_dir=str(tmp_path), device="cpu").encode(TEXTS[:3])
    batch = tokenizer(TEXTS[:3], padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        hidden = model.eval()(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert got.shape == (3, 48)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(InvalidInputError, match="not a Hugging Face model directory"):
        encoder_dim(str(tmp_path / "missing"))
