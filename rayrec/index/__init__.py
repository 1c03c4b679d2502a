"""rayrec.index: one shard's faiss index: ids, metadata, tombstones, filtered search (no Ray)."""
