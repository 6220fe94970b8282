#!/usr/bin/env bash
# The tests: sets everything up (scripts/setup.sh), then runs pytest against a real sshd, tmux, git,
# rsync and torchrun. Arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
