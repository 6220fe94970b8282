"""Settings: the one dotenv file -> a frozen `Settings` with one typed attribute per key.

    keys.py     the KEYS table: name, default, check, meaning, group, whether it reaches the pod
    checks.py   the checks keys use: text -> typed value, or Invalid("expected ...")
    model.py    Settings: one attribute per key (lower-case, the check's type); raw text via raw()/extras
    load.py     find_config, dotenv parsing, ${} expansion, parse_settings / load_settings
    secrets.py  which keys are secret; redaction and masking
    example.py  workflow.env.example from the table (`python -m wfops.settings`, __main__.py)

Pure: no fabric, no invoke (tests/integration/test_promises.py holds it).
"""
