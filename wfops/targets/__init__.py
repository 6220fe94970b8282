"""Targets: which pod(s) a command talks to, and the providers behind them (Lium, SSH hosts, this machine)."""
