"""`python -m wfops.settings > workflow.env.example`: the example file, generated from the KEYS table."""

from wfops.settings.example import example_text

print(example_text(), end="")
