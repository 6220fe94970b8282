"""Sweeps, client side: the CSV model, metrics tables, and one sweep spread over a fleet (plan, ledger, moves)."""
