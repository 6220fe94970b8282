#!/usr/bin/env bash
# The demo's last words: commands to keep going with its sweep, each one pasteable as printed, from any directory
# (the full path of the venv's wfops and the demo's config; tests/integration/test_hints.py runs every one).
# Usage: scripts/demo_next.sh CONFIG   (the demo's workflow.env)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
W=$(printf '%q' "$ROOT/.venv/bin/wfops")
C=$(printf '%q' "$CONFIG")
RUN=$("$ROOT/.venv/bin/wfops" sweep.status --json -c "$CONFIG" 2>/dev/null \
  | "$ROOT/.venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["runs"][0]["run_id"])' 2>/dev/null) || RUN=RUN_ID
echo "keep going: each line works as pasted, from any directory"
echo "  $W sweep.status -c $C                # the run table again"
echo "  $W run.logs $RUN --tail 5 -c $C     # the last lines of one run (--follow while it runs)"
echo "  $W sweep.report -c $C                # the ranked table; prints where results.csv and curves.png are"
echo "  $W fsm.status -c $C                  # the workflow state of the (pretend) pod"
echo "  (cd $(printf '%q' "$ROOT") && .venv/bin/inv sweep.status -c $C)   # inv: needs the tasks.py of the checkout"
echo "or put wfops on PATH for this shell, then drop the path:  export PATH=$(printf '%q' "$ROOT/.venv/bin"):\$PATH"
