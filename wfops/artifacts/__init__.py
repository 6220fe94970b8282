"""Artifacts: bringing run directories home (run.fetch)."""
