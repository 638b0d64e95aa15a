#!/usr/bin/env bash
# Create a TPU VM or pod slice through a queued resource; idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: create.sh --name NAME --zone ZONE --accelerator-type TYPE [options]

Create queued resource NAME (node --node-id, default NAME). If it already exists, say so and
create nothing. With --wait, poll until its state is ACTIVE.

  --accelerator-type TYPE  v4-8..v4-4096 (powers of 2), v5litepod-N / v5e-N (N in 1 4 8 16 32
                           64 128 256), v5p-N (N a multiple of 8, 8..12288), v6e-N (N in 1 4
                           8 16 32 64 128 256)                         (env TPU_ACCELERATOR_TYPE)
  --runtime-version V      default: tpu-ubuntu2204-base (v4), v2-alpha-tpuv5-lite (v5e),
                           v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e)
  --spot                   spot capacity (preemptible)
  --reserved               use the project's reservation (not with --spot)
  --wait                   poll `describe` until ACTIVE; fail on FAILED/SUSPENDED or timeout
  --timeout SECONDS        --wait limit (default 3600)
  --poll-interval SECONDS  between polls (default 30)
EOF
  common_usage
}

SCRIPT_FLAGS="--accelerator-type --runtime-version --spot --reserved --wait --timeout --poll-interval"
ACCEL="${TPU_ACCELERATOR_TYPE:-}"
RUNTIME=""
SPOT=0
RESERVED=0
WAIT=0
TIMEOUT=3600
POLL=30

while [[ $# -gt 0 ]]; do
  case "$1" in
    --accelerator-type | --accelerator-type=*) flag_value "$@"; ACCEL="$FLAG_VALUE" ;;
    --runtime-version | --runtime-version=*) flag_value "$@"; RUNTIME="$FLAG_VALUE" ;;
    --spot) SPOT=1; FLAG_SHIFT=1 ;;
    --reserved) RESERVED=1; FLAG_SHIFT=1 ;;
    --wait) WAIT=1; FLAG_SHIFT=1 ;;
    --timeout | --timeout=*) flag_value "$@"; TIMEOUT="$FLAG_VALUE" ;;
    --poll-interval | --poll-interval=*) flag_value "$@"; POLL="$FLAG_VALUE" ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done

VALID_TYPES="v4-N (N = 8, 16, 32, ..., 4096), v5litepod-N or v5e-N (N = 1, 4, 8, 16, 32, 64, 128, 256), v5p-N (N = 8, 16, 24, ..., 12288), v6e-N (N = 1, 4, 8, 16, 32, 64, 128, 256)"

# Prints the default runtime for a valid type; fails for an invalid one.
check_accelerator() {
  local t="$1" n
  [[ "$t" =~ ^(v4|v5litepod|v5e|v5p|v6e)-([1-9][0-9]{0,4})$ ]] || return 1
  n=${BASH_REMATCH[2]}
  case "${BASH_REMATCH[1]}" in
    v4) ((n >= 8 && n <= 4096 && (n & (n - 1)) == 0)) && echo tpu-ubuntu2204-base ;;
    v5litepod | v5e) [[ " 1 4 8 16 32 64 128 256 " == *" $n "* ]] && echo v2-alpha-tpuv5-lite ;;
    v5p) ((n >= 8 && n <= 12288 && n % 8 == 0)) && echo v2-alpha-tpuv5 ;;
    v6e) [[ " 1 4 8 16 32 64 128 256 " == *" $n "* ]] && echo v2-alpha-tpuv6e ;;
  esac
}

[[ -n "$ACCEL" ]] || usage_error "missing --accelerator-type; valid values: $VALID_TYPES"
DEFAULT_RUNTIME="$(check_accelerator "$ACCEL")" ||
  usage_error "--accelerator-type '$ACCEL' is not valid; valid values: $VALID_TYPES"
RUNTIME="${RUNTIME:-$DEFAULT_RUNTIME}"
[[ "$RUNTIME" =~ ^[a-z0-9][-a-z0-9.]*$ ]] || usage_error "--runtime-version '$RUNTIME' is not a valid runtime version name"
if [[ $SPOT == 1 && $RESERVED == 1 ]]; then
  usage_error "--spot and --reserved are mutually exclusive; pick one (or neither for on-demand)"
fi
validate_int --timeout "$TIMEOUT"
[[ "$POLL" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage_error "--poll-interval '$POLL' is not a number of seconds"
require_common

QR=(compute tpus queued-resources)
DESCRIBE=("${QR[@]}" describe "$NAME" "${GC_LOC[@]}" --format='value(state.state)')

state=""
rc=0
gcloud_describe state "${DESCRIBE[@]}" || rc=$?
if [[ $rc -eq 0 ]]; then
  log "queued resource '$NAME' already exists (state: ${state:-unknown}); not creating it again"
else
  CREATE=("${QR[@]}" create "$NAME" --node-id "$NODE_ID" "${GC_LOC[@]}"
    --accelerator-type "$ACCEL" --runtime-version "$RUNTIME")
  if [[ $SPOT == 1 ]]; then CREATE+=(--spot); fi
  if [[ $RESERVED == 1 ]]; then CREATE+=(--reserved); fi
  run_gcloud "${CREATE[@]}" || die "creating queued resource '$NAME' failed"
  log "requested queued resource '$NAME' ($ACCEL, runtime $RUNTIME)"
fi

[[ $WAIT == 1 ]] || exit 0
if [[ "$DRY_RUN" == 1 ]]; then
  run_gcloud "${DESCRIBE[@]}"
  log "dry run: would repeat the call above every ${POLL}s until ACTIVE (timeout ${TIMEOUT}s)"
  exit 0
fi

start=$SECONDS
while true; do
  rc=0
  gcloud_describe state "${DESCRIBE[@]}" || rc=$?
  [[ $rc -eq 0 ]] || die "queued resource '$NAME' disappeared while waiting for ACTIVE"
  log "queued resource '$NAME' state: ${state:-unknown} ($((SECONDS - start))s elapsed)"
  case "$state" in
    ACTIVE) log "queued resource '$NAME' is ACTIVE"; exit 0 ;;
    FAILED | SUSPENDED | SUSPENDING | DELETING)
      die "queued resource '$NAME' reached state $state while waiting for ACTIVE" ;;
  esac
  if ((SECONDS - start >= TIMEOUT)); then
    die "timed out after ${TIMEOUT}s waiting for queued resource '$NAME' to become ACTIVE (last state: ${state:-unknown})"
  fi
  sleep "$POLL"
done
