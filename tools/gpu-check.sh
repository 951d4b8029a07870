#!/usr/bin/env bash
# The GPU check: on a machine with a GPU, run the issue-9 measurements from
# a release binary built elsewhere (same x86-64; no cargo needed there,
# PyTorch for the comparison), in this order:
#   1. `info`;
#   2. `tune` (its choice is cached in OUT/cache, and used by what follows);
#   3. `bench` at each target shape, the tuned configuration and `legacy`
#      side by side in one run (`--config current,legacy`);
#   4. tools/compare_torch.py: PyTorch's f32 scaled_dot_product_attention
#      (TF32 off) and matmul + topk + softmax + gather, beside ours.
# Every record goes to OUT/records.jsonl (one JSON object per line, each with
# the step that made it), the console output to OUT/log.txt; the tuner's
# cache entry lands in OUT/cache/hopfield-gpu/. Three files in all.
#
# Usage: tools/gpu-check.sh [OUT]            (default OUT: gpu-check)
# Environment:
#   HOPFIELD_BIN           the binary (default target/release/hopfield-gpu)
#   HOPFIELD_CHECK_SHAPES  gpu (default: the issue's H100/H200 targets) or
#                          small (a smoke test for lavapipe: seconds per row)
#   HOPFIELD_CHECK_NO_TORCH=1  skip the PyTorch comparison (said so in the log)
#   HOPFIELD_CHECK_SECONDS the whole run's deadline (default 450: under 8 minutes)
# On the lent NVIDIA machines the Vulkan driver manifest is at
# /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json: used when no
# VK_DRIVER_FILES is set. Every step has a time limit, cut to what is left of
# the deadline; a step that runs out is recorded as such, not hidden.
set -uo pipefail

OUT="${1:-gpu-check}"
BIN="${HOPFIELD_BIN:-target/release/hopfield-gpu}"
SHAPES="${HOPFIELD_CHECK_SHAPES:-gpu}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
REC="$OUT/records.jsonl"
LOG="$OUT/log.txt"
: >"$REC"
: >"$LOG"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
export XDG_CACHE_HOME="$OUT/cache"
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ]; then
    export VK_DRIVER_FILES="$nvidia_icd"
fi

log() { echo "$*" | tee -a "$LOG"; }

if [ ! -x "$BIN" ]; then
    log "gpu-check: no binary at $BIN (set HOPFIELD_BIN)"
    exit 2
fi
case "$SHAPES" in
gpu)
    # (method flags, d, M, L, repeats)
    ROWS=(
        "dense|64|16384|16384|5"
        "dense|64|4096|4096|5"
        "dense|64|4000000|1|5"
        "dense|128|300000|1|5"
        "dense|128|300000|8|5"
        "topk --k 32|64|1000000|1024|5"
        "topk --k 256|64|16384|16384|3"
    )
    TUNE_ARGS=()
    F16_ROW="64|4000000|1"
    LIMIT=90
    ;;
small)
    ROWS=(
        "dense|64|512|512|2"
        "dense|128|65536|1|2"
        "dense|128|65536|8|2"
        "topk --k 64|64|512|512|2"
    )
    TUNE_ARGS=(--quick --repeats 1)
    F16_ROW="128|65536|1"
    LIMIT=300
    ;;
*)
    log "gpu-check: HOPFIELD_CHECK_SHAPES=$SHAPES is neither gpu nor small"
    exit 2
    ;;
esac

# Run one step under a time limit; its stdout (JSON) becomes records with
# the step's name, its stderr goes to the log. `to_records` flattens bench's
# {device, records: [...]} into one line per record.
DEADLINE="${HOPFIELD_CHECK_SECONDS:-450}"
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt 5 ]; then
        log "== $name: SKIPPED (the ${DEADLINE}s deadline is reached)"
        echo "{\"step\": \"$name\", \"skipped\": \"deadline\"}" >>"$REC"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "== $name: $*"
    local start=$SECONDS out rc
    out="$(timeout "$limit" "$@" 2>>"$LOG")"
    rc=$?
    if [ $rc -eq 124 ]; then
        log "   TIMED OUT after ${limit}s"
    elif [ $rc -ne 0 ]; then
        log "   failed (exit $rc)"
    fi
    printf '%s' "$out" | python3 -c '
import json, sys
step, rc, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
text = sys.stdin.read().strip()
try:
    doc = json.loads(text) if text else None
except ValueError:
    doc = {"text": text}
rows = doc.get("records") if isinstance(doc, dict) and "records" in doc else None
with open(sys.argv[4], "a") as f:
    if rows is not None:
        for r in rows:
            f.write(json.dumps({"step": step, "device": doc.get("device", {}).get("name"), **r}) + "\n")
            print("   %-18s %-6s d=%-4s M=%-8s L=%-6s %10.3f ms  vs 1st %s  %s" % (r["config"][:18], r["method"], r["d"], r["m"], r["l"], r["median_ms"], "-" if r.get("relative_to_first") is None else "%.3f" % r["relative_to_first"], r["kernels"]))
    else:
        f.write(json.dumps({"step": step, "exit": rc, "seconds": secs, "output": doc}) + "\n")
' "$name" "$rc" "$((SECONDS - start))" "$REC" | tee -a "$LOG"
    log "   ($((SECONDS - start)) s)"
}

log "gpu-check: $(date -u +%FT%TZ) bin=$BIN shapes=$SHAPES out=$OUT"
step info 60 "$BIN" info --json
"$BIN" info 2>&1 | sed 's/^/   /' | tee -a "$LOG" >/dev/null
step tune "$LIMIT" "$BIN" tune --json "${TUNE_ARGS[@]}"
for row in "${ROWS[@]}"; do
    IFS='|' read -r method d m l repeats <<<"$row"
    # shellcheck disable=SC2086 # the method field holds its flags
    step "bench $method d=$d M=$m L=$l" "$LIMIT" "$BIN" bench --json --method $method --d "$d" --m "$m" --l "$l" \
        --repeats "$repeats" --config current,legacy
done
IFS='|' read -r d m l <<<"$F16_ROW"
step "bench f16 d=$d M=$m L=$l" "$LIMIT" "$BIN" bench --json --method dense --f16 --d "$d" --m "$m" --l "$l" \
    --repeats 5
if [ "${HOPFIELD_CHECK_NO_TORCH:-0}" = 1 ]; then
    log "== compare_torch: SKIPPED (HOPFIELD_CHECK_NO_TORCH=1)"
    echo '{"step": "compare_torch", "skipped": "HOPFIELD_CHECK_NO_TORCH=1"}' >>"$REC"
else
    log "== compare_torch (shapes $SHAPES)"
    start=$SECONDS
    left=$((DEADLINE - SECONDS))
    [ "$left" -lt 10 ] && left=10
    timeout "$left" python3 "$HERE/compare_torch.py" --bin "$BIN" --repeats 5 --shapes "$SHAPES" --jsonl "$REC" \
        2>&1 | tee -a "$LOG"
    log "   ($((SECONDS - start)) s)"
fi
log "gpu-check: done in ${SECONDS}s; records in $REC"
