#!/usr/bin/env bash
# The recovery demo, on this machine: a managed sweep (sweep.wait --recover) loses its pod mid-run (a loopback
# sshd whose processes are all killed by PID), the pod comes back, the lost run resumes from its checkpoint as its
# next attempt, and every run ends `success` (scripts/recover_demo.py; everything in .wfops-recover-demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python scripts/recover_demo.py
