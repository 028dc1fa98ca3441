"""The benchmark: Keyplane against what its users would build instead (see README)."""
