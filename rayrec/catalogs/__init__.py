"""rayrec.catalogs: item catalogs: Parquet/Arrow, MovieLens 100K, encoding catalogs without embeddings."""
