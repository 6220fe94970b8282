#!/usr/bin/env bash
# The fleet demo, on this machine: three loopback sshd "pods" (127.0.0.2-4, each with its own HOME, started by
# scripts/local_fleet.py) get bootstrap and checkout in parallel, then one sweep spread over them: six
# one-GPU runs and one run across two pods (multi-node torchrun, gloo), waited for, joined into one status
# table, fetched from every pod and reported. Everything lives in .wfops-fleet-demo/ (rebuilt on each run);
# the pods are stopped (by PID) when the demo ends, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ROOT=$(pwd)
DEMO="$ROOT/.wfops-fleet-demo"
WFOPS="$ROOT/.venv/bin/wfops"
POD_PYTHON=${WFOPS_TEST_POD_PYTHON:-/usr/bin/python3}

if [ -f "$DEMO/fleet/fleet.json" ]; then .venv/bin/python scripts/local_fleet.py down --dir "$DEMO/fleet" || true; fi
rm -rf "$DEMO"
mkdir -p "$DEMO"
scripts/example_repo.sh "$DEMO"
.venv/bin/python scripts/local_fleet.py up 3 --dir "$DEMO/fleet" >/dev/null
trap '.venv/bin/python scripts/local_fleet.py down --dir "$DEMO/fleet" >/dev/null' EXIT
read -r HOSTS KEY < <(.venv/bin/python -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["hosts"], d["key"])' \
  "$DEMO/fleet/fleet.json")

cat > "$DEMO/fleet.csv" <<'CSV'
run_id,config,seed,overrides,notes,gpus,nodes
lr3e-3-s1,config/train_tiny.py,1,learning_rate=3e-3,,1,
lr3e-3-s2,config/train_tiny.py,2,learning_rate=3e-3,,1,
lr1e-3-s1,config/train_tiny.py,1,learning_rate=1e-3,,1,
lr1e-3-s2,config/train_tiny.py,2,learning_rate=1e-3,,1,
small-s1,config/train_small.py,1,,,1,
small-s2,config/train_small.py,2,,,1,
two-pods,config/train_tiny.py,3,,one run on two pods (2 ranks),1,2
CSV

cat > "$DEMO/workflow.env" <<ENV
# the fleet demo's config: three pods on loopback (OPS_HOSTS), every remote path under each pod's own ~
OPS_HOSTS=$HOSTS
SSH_KEY_PATH=$KEY
SSH_STRICT_HOST_KEYS=0
REPO_URL=file://$DEMO/training-repo.git
OPS_REMOTE_REPO=~/repo
OPS_REMOTE_OUTPUTS_DIR=~/outputs
REMOTE_ENV_PATH=~/project.env
DATA_DIR=~/data/fineweb10B
BOOTSTRAP_SCRIPT=~/bootstrap-pod.sh
REMOTE_PYTHON_BIN=$POD_PYTHON
CPU_ONLY=1
# two pretend GPU slots per pod: six 1-GPU runs spread 2 + 2 + 2, the 2-node run takes a slot on two pods
WF_FAKE_GPUS=2
DOWNLOAD_FINEWEB=1
RUN_TIMEOUT_SECS=600
WF_TMUX_SOCKET=wfops-fleet-demo
SWEEP_CSV=$DEMO/fleet.csv
LOCAL_ARTIFACTS_DIR=$DEMO/artifacts
METRIC_COLUMNS=val_loss
# the 2-node run's rendezvous port on the first pod: a free one (the default, 29400, may be taken here)
RDZV_PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
ENV
export WORKFLOW_CONFIG="$DEMO/workflow.env"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "wfops fsm.status (every pod at once, a section each)"; "$WFOPS" fsm.status
step "wfops bootstrap"; "$WFOPS" bootstrap
step "wfops checkout (three checkouts in parallel)"; "$WFOPS" checkout
step "wfops sweep.start (the runs spread over the pods by free slots)"; "$WFOPS" sweep.start
step "wfops sweep.wait (one table, a pod column; exit 0 only if every run succeeded)"
"$WFOPS" sweep.wait || echo "(a run did not succeed: see the table above)"
step "wfops run.fetch --all (from every pod)"; "$WFOPS" run.fetch --all >/dev/null
ls "$DEMO/artifacts"
step "wfops sweep.report (every pod's runs, sorted by val_loss)"
"$WFOPS" sweep.report
