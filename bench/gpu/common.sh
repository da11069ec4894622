# Sourced by proof.sh, speed.sh, recipes.sh: one device call each (<= 9 min), every step under its own timeout,
# results rewritten into $OUT/<results JSON> as each step ends (the device returns what is under $OUT).
#   source bench/gpu/common.sh NAME RESULTS_FILE "$@"     (--cpu-smoke or SMOKE=1: the CPU dry run)
# Step budget: INSTALL_TIMEOUT + the sum of every `step NAME SECONDS` of a script <= 540 s (tests/train/
# test_gpu_scripts.py checks it); the device call then gets timeout_s=600.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SCRIPT_NAME=$1 RESULTS_FILE=$2; shift 2
SMOKE=${SMOKE:-0}
for arg in "$@"; do [ "$arg" = --cpu-smoke ] && SMOKE=1; done
INSTALL_TIMEOUT=40
OUT=${OUT:-/tmp/smoldist-gpu-out}; mkdir -p "$OUT"
WORK=${WORK:-/tmp/smoldist-gpu-work/$SCRIPT_NAME}; mkdir -p "$WORK"
export OUT WORK SMOKE PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled HF_HUB_OFFLINE=1
export RESULTS=$OUT/$RESULTS_FILE
LOG=$OUT/$SCRIPT_NAME.log
# here: the project's venv; on the device: the image's python3 (its .venv link points nowhere there)
if [ -x .venv/bin/python ]; then PY=${PY:-$PWD/.venv/bin/python}; else PY=${PY:-python3}; fi
# the dry run gets 3x every limit: 2 busy CPU cores are slower than an H200, and a dry run must not fail on time
TIME_SCALE=1
if [ "$SMOKE" = 1 ]; then TIME_SCALE=3; export CUDA_VISIBLE_DEVICES=""; fi
MODE=$([ "$SMOKE" = 1 ] && echo cpu-smoke || echo full)
# presence by metadata, not import: a cold import of these can take tens of seconds on the device
if [ -d .whl ] && ! timeout 60 "$PY" -c "import importlib.metadata as m; [m.version(p) for p in ('trl', 'deepspeed', 'datasets', 'wandb')]" 2>/dev/null; then
  t=$SECONDS
  timeout "$INSTALL_TIMEOUT" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
  rc=$?
  if [ $rc != 0 ]; then  # still a results file that says so (results.py needs only the standard library)
    echo "wheel install failed, exit $rc after $((SECONDS - t)) s (see $LOG)"; tail -20 "$LOG"
    "$PY" bench/gpu/results.py init "$RESULTS" "$SCRIPT_NAME" "$MODE"
    "$PY" bench/gpu/results.py step "$RESULTS" wheel-install "$rc" "$((SECONDS - t))" "$INSTALL_TIMEOUT"
    exit 1
  fi
  echo "wheels installed into /tmp/site in $((SECONDS - t)) s" | tee -a "$LOG"
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
timeout 30 "$PY" bench/gpu/results.py requirements - 2>&1 | tee -a "$LOG"   # carried wheels vs the image's packages
"$PY" bench/gpu/results.py init "$RESULTS" "$SCRIPT_NAME" "$MODE"

step() {  # step NAME SECONDS CMD...: run CMD under its own timeout; its output appended to $LOG; status to $RESULTS
  local name=$1 limit=$(($2 * TIME_SCALE)) t=$SECONDS rc; shift 2
  echo "=== $name (limit ${limit} s) $(date -u +%FT%TZ)" | tee -a "$LOG"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "=== $name exit $rc after $((SECONDS - t)) s" | tee -a "$LOG"
  "$PY" bench/gpu/results.py step "$RESULTS" "$name" "$rc" "$((SECONDS - t))" "$limit"
}

finish() {  # the short table last: the device returns the tail of the output
  "$PY" bench/gpu/results.py summary "$RESULTS" | tee -a "$LOG"
  echo "results: $RESULTS, log: $LOG"
}
