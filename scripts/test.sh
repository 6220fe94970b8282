#!/usr/bin/env bash
# The tests: sets everything up (scripts/setup.sh), then runs pytest against a real sshd, tmux, git,
# rsync and torchrun. Arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
# The tests run in WFOPS_TEST_WORKERS (default 3) pytest-xdist worker processes: most of a test's time is spent
# waiting on sshd, tmux and torchrun, so 3 workers pay on 2 cores. Each worker has its own sshd, tmux server and
# session fixtures. They are handed out one at a time to whichever worker is free (--dist load --maxschedchunk 1),
# the longest first (tests/longest_first.py), so that the run does not end on one long test started last.
# `-n 0` after the script (or WFOPS_TEST_WORKERS=0) runs them in one process, as plain `.venv/bin/pytest` does.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
.venv/bin/pytest -n "${WFOPS_TEST_WORKERS:-3}" --dist load --maxschedchunk 1 "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$rc"
