#!/usr/bin/env bash
# Makes DIR/src (a git repository of examples/nanogpt-repo) and DIR/training-repo.git (its bare clone, the
# REPO_URL of the demos).
set -euo pipefail
DIR=$1
cd "$(dirname "$0")/.."
cp -r examples/nanogpt-repo "$DIR/src"
git -C "$DIR/src" init -q -b main
git -C "$DIR/src" add -A
git -C "$DIR/src" -c user.name=wfops-demo -c user.email=demo@example.invalid commit -q -m "example project"
git clone -q --bare "$DIR/src" "$DIR/training-repo.git"
