"""rayrec.system: a whole system: creating and attaching actors, the driver API, shard layout and generations,
re-sharding and model swaps."""
