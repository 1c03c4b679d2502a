"""Learning the item space from interactions: a two-tower model (and an SVD baseline), its files, its training job."""
