"""rayrec.users: user vectors and the feedback rule (no Ray)."""
