#!/usr/bin/env bash
# Run one command on every worker of a TPU node, in the background, logging to GCS.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: launch.sh --name NAME --zone ZONE --run RUN [options] -- COMMAND [ARGS...]

Start COMMAND on all workers (--worker=all) under nohup/setsid, so it survives the ssh
session. Each worker appends its output to ~/.mathjax-train/runs/RUN/output.log and, with
--log-dir, copies it to LOG_DIR/RUN/worker-$i.log every --upload-every seconds and at the end.
Refuses to start if RUN is already running on any worker, unless --force (which stops it).

Steps: 1 check the node, 2 look for a running RUN, 3 start RUN, 4 confirm RUN started.
A failing step is named and the script exits non-zero.

  --run RUN             run name: letters, digits, '.', '_', '-'
  --env KEY=VALUE       environment variable for COMMAND (repeatable)
  --log-dir gs://...    GCS folder for the logs (env TPU_LOG_DIR)
  --dir DIR             repo folder on the workers, relative to $HOME (default mathjax-train)
  --upload-every SECS   log upload period (default 60)
  --force               stop a running RUN of the same name and start again
Example:
  launch.sh --name my-v5p --zone us-east5-a --run sft1 --log-dir gs://b/logs \
    --env MATHJAX_DATA_DIR=gs://b/data -- mathjax-train train --config configs/x.yaml
EOF
  common_usage
}

SCRIPT_FLAGS="--run --env --log-dir --dir --upload-every --force"
RUN=""
ENVS=()
LOG_DIR="${TPU_LOG_DIR:-}"
DIR="mathjax-train"
UPLOAD_EVERY=60
FORCE=0
CMD=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --run | --run=*) flag_value "$@"; RUN="$FLAG_VALUE" ;;
    --env | --env=*) flag_value "$@"; ENVS+=("$FLAG_VALUE") ;;
    --log-dir | --log-dir=*) flag_value "$@"; LOG_DIR="$FLAG_VALUE" ;;
    --dir | --dir=*) flag_value "$@"; DIR="$FLAG_VALUE" ;;
    --upload-every | --upload-every=*) flag_value "$@"; UPLOAD_EVERY="$FLAG_VALUE" ;;
    --force) FORCE=1; FLAG_SHIFT=1 ;;
    --) shift; CMD=("$@"); break ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done

[[ -n "$RUN" ]] || usage_error "missing --run RUN"
validate_run_name "$RUN"
[[ ${#CMD[@]} -gt 0 ]] || usage_error "missing the command to run: put it after '--', e.g. -- mathjax-train train --config FILE"
for kv in ${ENVS[@]+"${ENVS[@]}"}; do
  [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || usage_error "--env '$kv' is not KEY=VALUE (KEY: letters, digits, '_')"
done
if [[ -n "$LOG_DIR" ]]; then
  [[ "$LOG_DIR" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9](/[A-Za-z0-9_.=/-]*)?$ ]] || usage_error "--log-dir '$LOG_DIR' is not a gs://BUCKET[/PATH] URL"
  LOG_DIR="${LOG_DIR%/}"
fi
[[ "$DIR" =~ ^[A-Za-z0-9_./-]+$ && "$DIR" != . && "$DIR" != / ]] || usage_error "--dir '$DIR' is not a usable folder name"
validate_int --upload-every "$UPLOAD_EVERY"
require_common

RUN_DIR="$(run_dir_expr "$RUN")"

# The script each worker runs under nohup; values are quoted here, $vars expand on the worker.
runner_script() {
  local kv dest=""
  if [[ -n "$LOG_DIR" ]]; then dest="$LOG_DIR/$RUN/worker-\$worker.log"; fi
  cat <<EOF
#!/bin/bash
# written by launch.sh for run $RUN
set -uo pipefail
d=$RUN_DIR
echo \$\$ > "\$d/pid"
worker="\${TPU_WORKER_ID:-\$(curl -sf --max-time 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)}"
log="\$d/output.log"
EOF
  if [[ -n "$LOG_DIR" ]]; then
    cat <<EOF
upload() {
  gcloud storage cp "\$log" "$dest" >/dev/null 2>&1 || echo "[launch] log upload to $dest failed" >> "\$log"
}
EOF
  else
    echo 'upload() { :; }'
  fi
  cat <<EOF
echo "=== run $RUN, worker \$worker, started \$(date -u +%FT%TZ) on \$(hostname)" >> "\$log"
EOF
  for kv in ${ENVS[@]+"${ENVS[@]}"}; do
    printf 'export %s=%s\n' "${kv%%=*}" "$(shq "${kv#*=}")"
  done
  cat <<EOF
cd "\$HOME" && cd $(shq "$DIR") || { echo "[launch] no folder $DIR on \$(hostname)" >> "\$log"; upload; echo 1 > "\$d/exit_code"; exit 1; }
( while sleep $UPLOAD_EVERY; do upload; done ) &
uploader=\$!
$(shjoin "${CMD[@]}") < /dev/null 2>&1 | tee -a "\$log" > /dev/null
rc=\${PIPESTATUS[0]}
kill "\$uploader" 2>/dev/null
echo "=== run $RUN, worker \$worker, exit code \$rc at \$(date -u +%FT%TZ)" >> "\$log"
upload
echo "\$rc" > "\$d/exit_code"
EOF
}

ALIVE="$REMOTE_RUNNING"

CHECK_CMD="d=$RUN_DIR; if $ALIVE; then echo \"MATHJAX_RUN_RUNNING $RUN on \$(hostname) (pid \$(cat \"\$d/pid\"))\"; fi; true"

# Sent as a quoted heredoc, so the worker writes it byte for byte.
RUNNER="$(runner_script)"
EOT=MATHJAX_RUN_SCRIPT_END
[[ "$RUNNER" != *"$EOT"* ]] || usage_error "the command must not contain the text $EOT"

STOP_OLD=""
if [[ $FORCE == 1 ]]; then
  # The runner leads its own process group (setsid): stop the whole group, wait up to 30 s.
  STOP_OLD="if $ALIVE; then
  pid=\$(cat \"\$d/pid\"); echo \"stopping run $RUN (pid \$pid) on \$(hostname)\"
  kill -TERM -- \"-\$pid\" 2>/dev/null || kill -TERM \"\$pid\" || true
  i=0; while ps -o stat= -p \"\$pid\" 2>/dev/null | grep -qv '^Z' && [ \$i -lt 60 ]; do sleep 0.5; i=\$((i + 1)); done
fi
"
fi
START_CMD="set -eu
d=$RUN_DIR
mkdir -p \"\$d\"
${STOP_OLD}if $ALIVE; then echo \"run $RUN is already running on \$(hostname)\" >&2; exit 1; fi
rm -f \"\$d/pid\" \"\$d/exit_code\"
cat > \"\$d/run.sh\" <<'$EOT'
$RUNNER
$EOT
nohup setsid bash \"\$d/run.sh\" > \"\$d/nohup.out\" 2>&1 < /dev/null &
echo \"started run $RUN on \$(hostname)\""

VERIFY_CMD="d=$RUN_DIR
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  if [ -f \"\$d/exit_code\" ]; then
    rc=\$(cat \"\$d/exit_code\"); echo \"run $RUN on \$(hostname) already finished with exit code \$rc\"; [ \"\$rc\" = 0 ]; exit
  fi
  if $ALIVE; then echo \"run $RUN is running on \$(hostname) (pid \$(cat \"\$d/pid\"))\"; exit 0; fi
  sleep 0.5
done
echo \"run $RUN did not start on \$(hostname); see \$d/nohup.out\" >&2; exit 1"

SSH=(compute tpus tpu-vm ssh "$NODE_ID" "${GC_LOC[@]}" --worker=all)

check_running() {
  local out
  out="$(run_gcloud "${SSH[@]}" --command "$CHECK_CMD")" || return
  if [[ "$out" == *MATHJAX_RUN_RUNNING* ]]; then
    printf '%s\n' "$out" | grep MATHJAX_RUN_RUNNING | sed 's/^.*MATHJAX_RUN_RUNNING /  running: /' >&3
    if [[ $FORCE == 1 ]]; then
      warn "run '$RUN' is running; --force: it will be stopped and started again"
    else
      die "run '$RUN' is already running on the workers above; not launching (use --force to restart it)"
    fi
  fi
}

step "1/4 check node '$NODE_ID' is READY" check_node_ready
step "2/4 look for a running '$RUN' on all workers" check_running
step "3/4 start run '$RUN' on all workers" run_gcloud "${SSH[@]}" --command "$START_CMD"
step "4/4 confirm run '$RUN' started on all workers" run_gcloud "${SSH[@]}" --command "$VERIFY_CMD"

if [[ "$DRY_RUN" == 1 ]]; then
  log "dry run: nothing was launched"
else
  log "launched run '$RUN' on all workers of '$NODE_ID'"
fi
if [[ -n "$LOG_DIR" ]]; then log "logs: $LOG_DIR/$RUN/worker-<i>.log"; fi
log "follow it: tail.sh --name $NAME --zone $ZONE --run $RUN --follow"
