"""Ray actors of rayrec: item shards, the query router and user-vector partitions."""
