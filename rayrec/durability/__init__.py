"""rayrec.durability: storage locations, the write-ahead log, snapshots and the Arrow form of changes (no Ray)."""
