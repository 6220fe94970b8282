"""Which keys are secret, and masking their values wherever they appear. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable

_SECRET_RE = re.compile(r"(_KEY$|_TOKEN$|_SECRET$|PASSWORD)", re.IGNORECASE)

MASK = "********"
MIN_SECRET = 4  # shorter secret values are not masked inside other text (they would mask half the output)


def is_secret(name: str) -> bool:
    return bool(_SECRET_RE.search(name))


def redact(name: str, value: str) -> str:
    if is_secret(name) and value:
        return MASK
    return value


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value in it replaced by the mask, whichever key carried it."""
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
