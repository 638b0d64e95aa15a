#!/usr/bin/env bash
# Show the log of a run on one worker (default 0) or all, over ssh or from GCS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: tail.sh --name NAME --zone ZONE --run RUN [--worker N|all] [--lines N] [--follow]
       tail.sh --run RUN --log-dir gs://... [--worker N|all]     (reads the copy on GCS)

  --run RUN          run started by launch.sh
  --worker N|all     worker index (default 0) or all
  --lines N          last N lines (default 100; ssh only)
  -f, --follow       keep following the log (ssh only)
  --log-dir gs://..  read LOG_DIR/RUN/worker-N.log from GCS instead of ssh (env TPU_LOG_DIR
                     is NOT used here, so plain tail.sh always shows the live log)
EOF2
  common_usage
}

SCRIPT_FLAGS="--run --worker --lines --follow --log-dir"
RUN=""
WORKER=0
LINES=100
FOLLOW=0
LOG_DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run | --run=*) flag_value "$@"; RUN="$FLAG_VALUE" ;;
    --worker | --worker=*) flag_value "$@"; WORKER="$FLAG_VALUE" ;;
    --lines | --lines=*) flag_value "$@"; LINES="$FLAG_VALUE" ;;
    -f | --follow) FOLLOW=1; FLAG_SHIFT=1 ;;
    --log-dir | --log-dir=*) flag_value "$@"; LOG_DIR="$FLAG_VALUE" ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done

[[ -n "$RUN" ]] || usage_error "missing --run RUN"
validate_run_name "$RUN"
validate_worker "$WORKER" 1
validate_int --lines "$LINES"

if [[ -n "$LOG_DIR" ]]; then
  [[ "$LOG_DIR" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9](/[A-Za-z0-9_.=/-]*)?$ ]] || usage_error "--log-dir '$LOG_DIR' is not a gs://BUCKET[/PATH] URL"
  [[ $FOLLOW == 0 ]] || usage_error "--follow needs ssh; drop --log-dir to follow the live log"
  if [[ "$DRY_RUN" == 1 ]]; then log "dry run: printing gcloud calls, running none"; fi
  if [[ "$WORKER" == all ]]; then obj="worker-*.log"; else obj="worker-$WORKER.log"; fi
  PROJ=()
  if [[ -n "$PROJECT" ]]; then PROJ=(--project "$PROJECT"); fi
  run_gcloud storage cat "${LOG_DIR%/}/$RUN/$obj" ${PROJ[@]+"${PROJ[@]}"} || die "reading the log of run '$RUN' from GCS failed"
  exit 0
fi

require_common
d="$(run_dir_expr "$RUN")"
if [[ $FOLLOW == 1 ]]; then opts="-n $LINES -F"; else opts="-n $LINES"; fi
run_gcloud compute tpus tpu-vm ssh "$NODE_ID" "${GC_LOC[@]}" --worker="$WORKER" \
  --command "d=$d; if [ -f \"\$d/output.log\" ]; then tail $opts \"\$d/output.log\"; else echo \"no log for run $RUN on \$(hostname)\" >&2; exit 1; fi" ||
  die "tailing the log of run '$RUN' on worker $WORKER failed"
