"""Which keys are secret, and masking their values wherever they appear. Pure.

Two rules. A key of the KEYS table is secret by its name's ending (`*_KEY`, `*_TOKEN`, `*_SECRET`,
`*PASSWORD*`: LIUM_API_KEY, WANDB_API_KEY, HF_TOKEN), so the known keys that only look like secrets
(SSH_KEY_PATH, SSH_STRICT_HOST_KEYS, EXTRA_ENV_KEYS) stay readable. Any other name (an unknown key, an extra
of EXTRA_ENV_KEYS, a variable of the environment a key refers to) is secret by its shape: it contains KEY,
TOKEN, SECRET, PASS (PASSWORD, PASSWD, PASSPHRASE, a bare DB_PASS), CREDENTIAL or PWD anywhere, in any case,
underscores and dashes ignored (`WANDB_APIKEY`, `hf_Token`, `DB_PASS_WORD`), except the shell's own PWD and
OLDPWD. A mistyped secret is masked before anyone has noticed the typo; the price is that an extra such as
`SORT_KEY=loss` (or `BYPASS_CACHE=1`) is masked too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from wfops.settings.keys import KEYS_BY_NAME

_SECRET_RE = re.compile(r"(_KEY$|_TOKEN$|_SECRET$|PASSWORD)", re.IGNORECASE)
_SHAPE_RE = re.compile(r"KEY|TOKEN|SECRET|PASS|CREDENTIAL|PWD")  # PASS: PASSWORD, PASSWD, PASSPHRASE, DB_PASS
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})  # the shell's working directories

MASK = "********"
MIN_SECRET = 4  # shorter secret values are not masked inside other text (they would mask half the output)


def is_secret(name: str) -> bool:
    if name in KEYS_BY_NAME:
        return bool(_SECRET_RE.search(name))
    return secret_by_shape(name)


def secret_by_shape(name: str) -> bool:
    """A name that is not a known key but looks like a secret's (see the module docstring)."""
    if name in KEYS_BY_NAME or name.upper() in _NOT_SECRET:
        return False
    return bool(_SHAPE_RE.search(re.sub(r"[^A-Z0-9]", "", name.upper())))


def redact(name: str, value: str) -> str:
    if is_secret(name) and value:
        return MASK
    return value


def shown_forms(secrets: Iterable[str]) -> list[str]:
    """The texts to mask for these secret values, longest first: each value, and a value with spaces around it
    (HF_TOKEN='hf_abc ') also without them, as a program that strips it or the shell's `echo $X` shows it. A
    value whose stripped form is shorter than MIN_SECRET (or empty: '    ' would mask every run of spaces) is
    not looked for in either form."""
    return sorted({v for s in secrets if len(s.strip()) >= MIN_SECRET for v in (s, s.strip())}, key=len, reverse=True)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value in it (see shown_forms) replaced by the mask, whichever key carried it."""
    for secret in shown_forms(secrets):
        text = text.replace(secret, MASK)
    return text
