#!/usr/bin/env bash
# ssh to one worker of a TPU node (default worker 0), optionally running a command.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: ssh.sh --name NAME --zone ZONE [--worker N] [-- COMMAND [ARGS...]]

  --worker N   worker index (default 0); use launch.sh to run on all workers
EOF2
  common_usage
}

SCRIPT_FLAGS="--worker"
WORKER=0
CMD=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker | --worker=*) flag_value "$@"; WORKER="$FLAG_VALUE" ;;
    --) shift; CMD=("$@"); break ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done
validate_worker "$WORKER"
require_common

ARGS=(compute tpus tpu-vm ssh "$NODE_ID" "${GC_LOC[@]}" --worker="$WORKER")
if [[ ${#CMD[@]} -gt 0 ]]; then ARGS+=(--command "$(shjoin "${CMD[@]}")"); fi
rc=0
run_gcloud "${ARGS[@]}" || rc=$?
exit "$rc"
