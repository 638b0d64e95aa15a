#!/usr/bin/env bash
# Show the queued resource and node state, and optionally a run's state on every worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: status.sh --name NAME --zone ZONE [--run RUN]

Prints "queued-resource NAME: STATE" and "node NODE: STATE" (NOT_FOUND when absent).
With --run, also asks every worker whether RUN is running or has exited (and its exit code).
Exit code: 0, or 3 when neither the queued resource nor the node exists.

  --run RUN   a run started by launch.sh
EOF2
  common_usage
}

SCRIPT_FLAGS="--run"
RUN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run | --run=*) flag_value "$@"; RUN="$FLAG_VALUE" ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done
if [[ -n "$RUN" ]]; then validate_run_name "$RUN"; fi
require_common

show() {
  local label="$1" rc=0 out=""
  shift
  gcloud_describe out "$@" || rc=$?
  case $rc in
    0) printf '%s: %s\n' "$label" "$(printf '%s' "${out:-unknown}" | tr '\t' ' ')" ;;
    1) printf '%s: NOT_FOUND\n' "$label" ;;
    2) printf '%s: unknown (dry run)\n' "$label" ;;
  esac
  return "$rc"
}

qr_rc=0
node_rc=0
show "queued-resource $NAME" compute tpus queued-resources describe "$NAME" "${GC_LOC[@]}" --format='value(state.state)' || qr_rc=$?
show "node $NODE_ID" compute tpus tpu-vm describe "$NODE_ID" "${GC_LOC[@]}" --format='value(state,health)' || node_rc=$?
if [[ $qr_rc == 1 && $node_rc == 1 ]]; then exit 3; fi

if [[ -n "$RUN" ]]; then
  if [[ $node_rc == 1 ]]; then die "node '$NODE_ID' does not exist; cannot ask about run '$RUN'"; fi
  d="$(run_dir_expr "$RUN")"
  run_gcloud compute tpus tpu-vm ssh "$NODE_ID" "${GC_LOC[@]}" --worker=all --command "d=$d
if $REMOTE_RUNNING; then echo \"run $RUN on \$(hostname): running (pid \$(cat \"\$d/pid\"))\"
elif [ -f \"\$d/exit_code\" ]; then echo \"run $RUN on \$(hostname): exited with code \$(cat \"\$d/exit_code\")\"
elif [ -d \"\$d\" ]; then echo \"run $RUN on \$(hostname): not running, no exit code (killed or preempted?)\"
else echo \"run $RUN on \$(hostname): never launched here\"; fi" ||
    die "asking the workers about run '$RUN' failed"
fi
