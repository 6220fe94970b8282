"""Invoke entry point for this checkout: `inv --list`. The task tree lives in wfops.tasks."""

from wfops.tasks import ns  # noqa: F401
