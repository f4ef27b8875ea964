"""Pieces every stage shares: profile configs, one-line errors, atomic file writes, seeding."""
