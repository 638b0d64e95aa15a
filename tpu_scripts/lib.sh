# shellcheck shell=bash
# Shared helpers for tpu_scripts/*.sh. Source it; do not run it.
#
# Globals set by parse_common / the env:
#   PROJECT (TPU_PROJECT), ZONE (TPU_ZONE, CLOUDSDK_COMPUTE_ZONE), NAME (TPU_NAME),
#   NODE_ID (TPU_NODE_ID, default NAME), DRY_RUN (TPU_DRY_RUN=1)

PROJECT="${TPU_PROJECT:-}"
ZONE="${TPU_ZONE:-${CLOUDSDK_COMPUTE_ZONE:-}}"
NAME="${TPU_NAME:-}"
NODE_ID="${TPU_NODE_ID:-}"
DRY_RUN="${TPU_DRY_RUN:-0}"
SCRIPT="$(basename "$0")"
COMMON_FLAGS="--project --zone --name --node-id --dry-run --help"
STEPS_DONE=()

# fd 3 = the caller's stderr, so the "+ gcloud ..." trace survives `2>file` around a call.
exec 3>&2

log() { printf '[%s] %s\n' "$SCRIPT" "$*" >&3; }
warn() { printf '[%s] WARNING: %s\n' "$SCRIPT" "$*" >&3; }

# die MESSAGE [EXIT_CODE]: exit 2 is used for usage errors, 1 for everything else.
die() {
  printf '[%s] ERROR: %s\n' "$SCRIPT" "$1" >&3
  exit "${2:-1}"
}
usage_error() { die "$1 (run '$SCRIPT --help' for usage)" 2; }

# shq ARG: quote for a POSIX shell, leaving plain words alone.
shq() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# shjoin ARGS...: one shell-quoted command line.
shjoin() {
  local out="" a
  for a in "$@"; do out+="${out:+ }$(shq "$a")"; done
  printf '%s' "$out"
}

# run_gcloud ARGS...: print the call, then run it unless --dry-run.
run_gcloud() {
  printf '+ %s\n' "$(shjoin gcloud "$@")" >&3
  if [[ "$DRY_RUN" == 1 ]]; then
    return 0
  fi
  gcloud "$@"
}

# flag_value "$@": value of the flag in $1 (`--f v` or `--f=v`) into FLAG_VALUE,
# and how many args it used into FLAG_SHIFT.
flag_value() {
  local flag="${1%%=*}"
  if [[ "$1" == *=* ]]; then
    FLAG_VALUE="${1#*=}"
    FLAG_SHIFT=1
  elif [[ $# -ge 2 && "$2" != --* ]]; then
    FLAG_VALUE="$2"
    FLAG_SHIFT=2
  else
    usage_error "flag $flag needs a value"
  fi
  [[ -n "$FLAG_VALUE" ]] || usage_error "flag $flag needs a non-empty value"
}

# parse_common "$@": handle one common flag (sets FLAG_SHIFT) or die naming the bad argument.
# Scripts put their own flags in SCRIPT_FLAGS for the error message.
# shellcheck disable=SC2034  # FLAG_SHIFT is read by the caller
parse_common() {
  case "$1" in
    --project | --project=*) flag_value "$@"; PROJECT="$FLAG_VALUE" ;;
    --zone | --zone=*) flag_value "$@"; ZONE="$FLAG_VALUE" ;;
    --name | --name=*) flag_value "$@"; NAME="$FLAG_VALUE" ;;
    --node-id | --node-id=*) flag_value "$@"; NODE_ID="$FLAG_VALUE" ;;
    --dry-run) DRY_RUN=1; FLAG_SHIFT=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage_error "unknown flag '${1%%=*}'; valid flags: ${SCRIPT_FLAGS:+$SCRIPT_FLAGS }$COMMON_FLAGS" ;;
    *) usage_error "unexpected argument '$1'" ;;
  esac
}

common_usage() {
  cat <<'EOF'
Common flags (or env vars):
  --name NAME        queued resource name (TPU_NAME)
  --zone ZONE        e.g. us-east5-a (TPU_ZONE, CLOUDSDK_COMPUTE_ZONE)
  --project PROJECT  GCP project; gcloud's default if unset (TPU_PROJECT)
  --node-id ID       TPU node name; defaults to --name (TPU_NODE_ID)
  --dry-run          print the gcloud calls without running them (TPU_DRY_RUN=1)
  -h, --help         this help
EOF
}

# GCP resource names: lowercase letter first, then [a-z0-9-], no trailing '-', <= 63 chars.
validate_resource_name() {
  local flag="$1" value="$2"
  [[ "$value" =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    usage_error "$flag '$value' is not a valid GCP name: use 1-63 characters, lowercase letters, digits and '-', starting with a letter and not ending with '-'"
}

# Check --name/--zone/--project/--node-id and set GC_LOC=(--zone Z [--project P]).
require_common() {
  [[ -n "$NAME" ]] || usage_error "missing --name (or TPU_NAME)"
  [[ -n "$ZONE" ]] || usage_error "missing --zone (or TPU_ZONE)"
  validate_resource_name --name "$NAME"
  [[ "$ZONE" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    usage_error "--zone '$ZONE' is not a zone name like us-central2-b or europe-west4-a"
  if [[ -n "$PROJECT" ]]; then
    [[ "$PROJECT" =~ ^[a-z][-a-z0-9:.]{4,}[a-z0-9]$ ]] || usage_error "--project '$PROJECT' is not a valid project id"
  fi
  NODE_ID="${NODE_ID:-$NAME}"
  validate_resource_name --node-id "$NODE_ID"
  GC_LOC=(--zone "$ZONE")
  if [[ -n "$PROJECT" ]]; then GC_LOC+=(--project "$PROJECT"); fi
  if [[ "$DRY_RUN" == 1 ]]; then log "dry run: printing gcloud calls, running none"; fi
}

validate_int() {
  local flag="$1" value="$2"
  [[ "$value" =~ ^[0-9]+$ ]] || usage_error "$flag '$value' is not a non-negative integer"
}

validate_worker() {
  local value="$1" allow_all="${2:-0}"
  if [[ "$allow_all" == 1 && "$value" == all ]]; then return 0; fi
  if [[ ! "$value" =~ ^[0-9]+$ ]]; then
    if [[ "$allow_all" == 1 ]]; then
      usage_error "--worker '$value' is not valid; valid values: 0, 1, 2, ... (worker index) or 'all'"
    fi
    usage_error "--worker '$value' is not valid; valid values: 0, 1, 2, ... (worker index)"
  fi
}

validate_run_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ ]] ||
    usage_error "--run '$1' is not a valid run name: use letters, digits, '.', '_', '-' (start with a letter or digit)"
}

# gcloud_describe OUTVAR ARGS...: run a describe call. Returns 0 (exists; stdout in OUTVAR),
# 1 (NOT_FOUND), 2 (dry run: unknown). Any other failure is fatal.
gcloud_describe() {
  local -n _out="$1"
  shift
  local err rc=0
  _out=""
  if [[ "$DRY_RUN" == 1 ]]; then
    run_gcloud "$@"
    return 2
  fi
  err="$(mktemp)"
  _out="$(run_gcloud "$@" 2>"$err")" || rc=$?
  if [[ $rc -eq 0 ]]; then
    rm -f "$err"
    return 0
  fi
  if grep -qiE 'NOT_FOUND|not found|was not found' "$err"; then
    rm -f "$err"
    return 1
  fi
  cat "$err" >&3
  rm -f "$err"
  die "'gcloud $*' failed (exit $rc) and did not say NOT_FOUND; stopping"
}

# step DESCRIPTION CMD...: run one numbered step; on failure, name it and list what was done.
step() {
  local desc="$1" rc=0
  shift
  log "step: $desc"
  "$@" || rc=$?
  if [[ $rc -ne 0 ]]; then
    local done_list="nothing"
    if [[ ${#STEPS_DONE[@]} -gt 0 ]]; then
      done_list="$(printf "'%s', " "${STEPS_DONE[@]}")"
      done_list="${done_list%, }"
    fi
    die "step '$desc' failed (exit $rc). Steps completed before it: $done_list"
  fi
  STEPS_DONE+=("$desc")
}

# Step body: the TPU node exists and is READY.
check_node_ready() {
  local state="" rc=0
  gcloud_describe state compute tpus tpu-vm describe "$NODE_ID" "${GC_LOC[@]}" --format='value(state)' || rc=$?
  case $rc in
    0) [[ "$state" == READY ]] || { log "node '$NODE_ID' is ${state:-in an unknown state}, not READY"; return 1; } ;;
    1) log "node '$NODE_ID' not found in zone $ZONE (create it with create.sh)"; return 1 ;;
  esac
}

# Remote snippets (run on the workers) shared by launch/status/tail.
# Worker-side test that the run in $d is running: a live (non-zombie) pid and no exit_code yet.
# shellcheck disable=SC2016,SC2034  # expands on the worker; used by the scripts
REMOTE_RUNNING='[ -f "$d/pid" ] && [ ! -f "$d/exit_code" ] && ps -o stat= -p "$(cat "$d/pid")" 2>/dev/null | grep -qv "^Z"'
# shellcheck disable=SC2016  # $HOME must expand on the worker
run_dir_expr() { printf '"$HOME/.mathjax-train/runs/%s"' "$1"; }
