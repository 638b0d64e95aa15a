#!/usr/bin/env bash
# Delete the queued resource and its node; idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: delete.sh --name NAME --zone ZONE --yes

Delete queued resource NAME together with its node (--force), or, when there is no queued
resource, the node --node-id alone. Already gone: says so and exits 0.

  -y, --yes   do not ask; required when stdin is not a terminal (CI). Not needed with --dry-run.
EOF2
  common_usage
}

SCRIPT_FLAGS="--yes"
YES=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -y | --yes) YES=1; FLAG_SHIFT=1 ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done
require_common

if [[ $YES == 0 && "$DRY_RUN" == 0 ]]; then
  if [[ ! -t 0 ]]; then
    usage_error "refusing to delete '$NAME' without --yes: stdin is not a terminal, so I cannot ask"
  fi
  read -r -p "Delete queued resource '$NAME' and node '$NODE_ID' in $ZONE? [y/N] " answer
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || die "not confirmed; nothing deleted"
fi

# shellcheck disable=SC2034  # set through a nameref
out=""
rc=0
gcloud_describe out compute tpus queued-resources describe "$NAME" "${GC_LOC[@]}" --format='value(state.state)' || rc=$?
if [[ $rc != 1 ]]; then
  run_gcloud compute tpus queued-resources delete "$NAME" "${GC_LOC[@]}" --force --quiet ||
    die "deleting queued resource '$NAME' failed"
  log "deleted queued resource '$NAME' and its node"
  exit 0
fi

rc=0
gcloud_describe out compute tpus tpu-vm describe "$NODE_ID" "${GC_LOC[@]}" --format='value(state)' || rc=$?
if [[ $rc == 1 ]]; then
  log "queued resource '$NAME' and node '$NODE_ID' are already gone; nothing to delete"
  exit 0
fi
run_gcloud compute tpus tpu-vm delete "$NODE_ID" "${GC_LOC[@]}" --quiet || die "deleting node '$NODE_ID' failed"
log "no queued resource '$NAME'; deleted node '$NODE_ID'"
