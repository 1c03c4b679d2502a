"""What rayrec needs to know about a faiss index kind: its knobs, training and filtered search."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from rayrec import constants as C

# Centroids of a PQ sub-quantizer: what a non-IVF trainable index (PQ) trains.
PQ_CENTROIDS = 256
# faiss trains k-means on at most this many points per centroid.
MAX_TRAIN_POINTS_PER_CENTROID = 256
# Lowest selectivity the efSearch / nprobe boost divides by.
MIN_SELECTIVITY = 1e-6


@contextlib.contextmanager
def omp_threads(n: int | None) -> Iterator[None]:
    """Runs a block with faiss using n OpenMP threads (None leaves it alone)."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def set_process_threads(n: int) -> None:
    """Has faiss in this process use n OpenMP threads, and BLAS from C.FAISS_BLAS_THRESHOLD queries a batch on."""
    faiss.omp_set_num_threads(n)
    faiss.cvar.distance_compute_blas_threshold = C.FAISS_BLAS_THRESHOLD


def ivf_of(index: faiss.Index) -> Any:
    """The IVF part of an index, or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def is_hnsw(index: faiss.Index) -> bool:
    return hasattr(index, "hnsw")


def new_index(dim: int, factory: str, ef_search: int, nprobe: int) -> faiss.Index:
    """An empty inner-product index of the factory's kind, with its search knob set."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexPreTransform):
        raise ValueError(
            f"factory {factory!r} starts with a transform (PCA, OPQ, ...); rayrec needs an index it can "
            "filter and tune directly: Flat, HNSW..., IVF...,Flat/PQ/SQ. Reduce dimensions before loading."
        )
    set_knobs(index, ef_search, nprobe)
    return index


def set_knobs(index: faiss.Index, ef_search: int, nprobe: int) -> None:
    """Sets an index's default efSearch (HNSW) or nprobe (IVF)."""
    if is_hnsw(index):
        index.hnsw.efSearch = ef_search
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.nprobe = nprobe


def train_sizes(index: faiss.Index) -> tuple[int, int]:
    """(vectors needed before training, most vectors worth training on)."""
    ivf = ivf_of(index)
    centroids = ivf.nlist if ivf is not None else PQ_CENTROIDS
    return centroids * C.IVF_TRAIN_POINTS_PER_LIST, centroids * MAX_TRAIN_POINTS_PER_CENTROID


def search_params(index: faiss.Index, ef_search: int, nprobe: int, selector: Any, selectivity: float) -> Any:
    """Search parameters for a selector letting `selectivity` of the rows through.

    A selector hides rows from the result but not from the graph walk or the
    probed lists, so efSearch / nprobe grow by 1 / selectivity (capped) to keep
    recall when a filter is restrictive.
    """
    boost = 1.0 / max(selectivity, MIN_SELECTIVITY)
    if is_hnsw(index):
        ef = int(min(ef_search * boost, max(ef_search, C.FILTERED_EF_SEARCH_MAX)))
        return faiss.SearchParametersHNSW(sel=selector, efSearch=max(ef, ef_search))
    ivf = ivf_of(index)
    if ivf is not None:
        probes = int(min(nprobe * boost, ivf.nlist))
        return faiss.SearchParametersIVF(sel=selector, nprobe=max(probes, min(nprobe, ivf.nlist)))
    return faiss.SearchParameters(sel=selector)


def exact_topk(q: np.ndarray, vectors: np.ndarray, rows: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`want` of queries over vectors[rows]: (scores, row numbers), best first."""
    sims = q @ vectors[rows].T
    want = min(want, rows.size)
    if want < rows.size:
        part = np.argpartition(-sims, want - 1, axis=1)[:, :want]
    else:
        part = np.broadcast_to(np.arange(rows.size), (q.shape[0], rows.size))
    top = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return (
        np.take_along_axis(top, order, axis=1).astype(np.float32),
        rows[np.take_along_axis(part, order, axis=1)].astype(np.int64),
    )
