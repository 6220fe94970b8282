#!/usr/bin/env bash
# The main job, on this machine (the `local` target): the bundled example becomes a git repo, then
# bootstrap -> checkout (venv over the system torch, data download) -> a 3-run CPU sweep with torchrun
# -> wait -> status table -> fetch -> the results table and curves. Everything lives in .wfops-demo/ (rebuilt on
# each run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ROOT=$(pwd)
DEMO="$ROOT/.wfops-demo"
WFOPS="$ROOT/.venv/bin/wfops"
POD_PYTHON=${WFOPS_TEST_POD_PYTHON:-/usr/bin/python3}

tmux -L wfops-demo kill-server 2>/dev/null || true
rm -rf "$DEMO"
mkdir -p "$DEMO/pod"
scripts/example_repo.sh "$DEMO"

cat > "$DEMO/workflow.env" <<ENV
# the demo's config: the pod is this machine (OPS_DEFAULT_HOST=local), CPU-only on purpose
OPS_DEFAULT_HOST=local
REPO_URL=file://$DEMO/training-repo.git
OPS_REMOTE_REPO=$DEMO/pod/repo
OPS_REMOTE_OUTPUTS_DIR=$DEMO/pod/outputs
REMOTE_ENV_PATH=$DEMO/pod/project.env
DATA_DIR=$DEMO/pod/data/fineweb10B
BOOTSTRAP_SCRIPT=$DEMO/pod/bootstrap-pod.sh
REMOTE_PYTHON_BIN=$POD_PYTHON
CPU_ONLY=1
# pretend 4 GPU slots: the runs of demo.csv (gpus 2, 1, 1) run side by side, one process per slot held
WF_FAKE_GPUS=4
DOWNLOAD_FINEWEB=1
RUN_TIMEOUT_SECS=600
WF_TMUX_SOCKET=wfops-demo
SWEEP_CSV=$DEMO/src/sweeps/demo.csv
LOCAL_ARTIFACTS_DIR=$DEMO/artifacts
METRIC_COLUMNS=val_loss
ENV
export WORKFLOW_CONFIG="$DEMO/workflow.env"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step "wfops fsm.status"; "$WFOPS" fsm.status
step "wfops bootstrap"; "$WFOPS" bootstrap
step "wfops checkout"; "$WFOPS" checkout
step "wfops sweep.start"; "$WFOPS" sweep.start
step "wfops sweep.wait (until the queue ends; exit 0 only if every run succeeded)"
"$WFOPS" sweep.wait || echo "(a run did not succeed: see the table above)"
step "wfops run.fetch --all"; "$WFOPS" run.fetch --all
echo
echo "artifacts: $DEMO/artifacts/<run_id>/ (metrics.jsonl, final.json, ckpt.pt, stdout.log, summary.json)"
step "wfops sweep.report (results.csv and curves.png, runs sorted by val_loss)"
"$WFOPS" sweep.report
echo
scripts/demo_next.sh "$DEMO/workflow.env"
