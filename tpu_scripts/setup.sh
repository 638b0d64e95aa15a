#!/usr/bin/env bash
# Install mathjax-train with its [tpu] extra on every worker of a TPU node; idempotent.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: setup.sh --name NAME --zone ZONE (--source gs://BUCKET/PATH.tar.gz | --git URL [--ref REF])

On all workers: put the repo in --dir (replacing the previous copy from a tarball, or
fetching REF into an existing clone), then `pip install -e 'DIR[tpu]'`. Safe to re-run.

  --source gs://...tar.gz  tarball of the repo (e.g. `git archive --format=tar.gz HEAD`);
                           the workers' service account needs read access
  --git URL                git repository to clone
  --ref REF                branch, tag or commit for --git (default main)
  --dir DIR                folder on the workers, relative to $HOME (default mathjax-train)
  --python PY              interpreter on the workers (default python3)
EOF
  common_usage
}

SCRIPT_FLAGS="--source --git --ref --dir --python"
SOURCE=""
GIT_URL=""
REF=""
DIR="mathjax-train"
PY="python3"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --source | --source=*) flag_value "$@"; SOURCE="$FLAG_VALUE" ;;
    --git | --git=*) flag_value "$@"; GIT_URL="$FLAG_VALUE" ;;
    --ref | --ref=*) flag_value "$@"; REF="$FLAG_VALUE" ;;
    --dir | --dir=*) flag_value "$@"; DIR="$FLAG_VALUE" ;;
    --python | --python=*) flag_value "$@"; PY="$FLAG_VALUE" ;;
    *) parse_common "$@" ;;
  esac
  shift "$FLAG_SHIFT"
done

if [[ -n "$SOURCE" && -n "$GIT_URL" ]]; then
  usage_error "--source and --git are mutually exclusive; give one"
fi
[[ -n "$SOURCE" || -n "$GIT_URL" ]] || usage_error "missing the code to install: give --source gs://.../repo.tar.gz or --git URL [--ref REF]"
if [[ -n "$SOURCE" ]]; then
  [[ "$SOURCE" =~ ^gs://[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]/.+\.(tar\.gz|tgz)$ ]] ||
    usage_error "--source '$SOURCE' is not a gs://BUCKET/PATH.tar.gz (or .tgz) URL"
  [[ -z "$REF" ]] || usage_error "--ref only goes with --git"
else
  REF="${REF:-main}"
  [[ "$REF" =~ ^[A-Za-z0-9][A-Za-z0-9._/-]*$ ]] || usage_error "--ref '$REF' is not a valid branch, tag or commit name"
fi
[[ "$DIR" =~ ^[A-Za-z0-9_][A-Za-z0-9_./-]*$ && "$DIR" != *..* ]] ||
  usage_error "--dir '$DIR' is not a usable folder name (letters, digits, '_', '.', '-', '/'; no '..')"
[[ "$PY" =~ ^[A-Za-z0-9_./-]+$ ]] || usage_error "--python '$PY' is not a valid interpreter path"
require_common

QDIR="$(shq "$DIR")"
if [[ -n "$SOURCE" ]]; then
  # Unpack beside the old copy, then swap, so a re-run never mixes two versions.
  FETCH="tmp=\$(mktemp -d)
trap 'rm -rf \"\$tmp\"' EXIT
gcloud storage cp $(shq "$SOURCE") \"\$tmp/src.tar.gz\"
mkdir \"\$tmp/x\"
tar -xzf \"\$tmp/src.tar.gz\" -C \"\$tmp/x\"
src=\"\$tmp/x\"
if [ ! -f \"\$src/pyproject.toml\" ] && [ \$(ls -A \"\$src\" | wc -l) = 1 ]; then src=\"\$src/\$(ls -A \"\$src\")\"; fi
[ -f \"\$src/pyproject.toml\" ] || { echo \"no pyproject.toml in $SOURCE\" >&2; exit 1; }
rm -rf $QDIR.old
if [ -e $QDIR ]; then mv $QDIR $QDIR.old; fi
mkdir -p \"\$(dirname $QDIR)\"
mv \"\$src\" $QDIR
rm -rf $QDIR.old"
else
  FETCH="if [ ! -d $QDIR/.git ]; then
  if [ -e $QDIR ]; then echo \"$DIR exists on \$(hostname) but is not a git clone; move it away\" >&2; exit 1; fi
  git clone --quiet $(shq "$GIT_URL") $QDIR
fi
git -C $QDIR remote set-url origin $(shq "$GIT_URL")
git -C $QDIR fetch --quiet --tags origin $(shq "$REF")
git -C $QDIR checkout --quiet --force --detach FETCH_HEAD"
fi

INSTALL_CMD="set -eu
cd \"\$HOME\"
$FETCH
$(shq "$PY") -m pip install --quiet -e $(shq "${DIR}[tpu]")
echo \"mathjax-train installed on \$(hostname): \$($(shq "$PY") -c 'import jax; print(\"jax\", jax.__version__)')\""

step "1/2 check node '$NODE_ID' is READY" check_node_ready
step "2/2 install mathjax-train[tpu] on all workers" \
  run_gcloud compute tpus tpu-vm ssh "$NODE_ID" "${GC_LOC[@]}" --worker=all --command "$INSTALL_CMD"
if [[ "$DRY_RUN" == 1 ]]; then log "dry run: nothing was installed"; else log "set up all workers of '$NODE_ID'"; fi
