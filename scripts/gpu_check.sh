#!/usr/bin/env bash
# Every GPU figure of issue 13 in one run, under 8 minutes on one H200 (each step has its own time limit,
# 480 s in all; a step that runs past it is recorded and the next one runs): the GPU-marked tests, then
# `lingua2-batch bench` on CUDA with the XLM-R-large-shaped scratch checkpoint (model tokens/s, model
# FLOP utilisation, GPU idle share, peak GPU memory, bf16 decision agreement, the reference on the same
# GPU in the same run), what mixed precision costs against every weight in bf16, compat mode's
# exactness on CUDA, RAG passages with the small model, and the Ray job on the GPU next to in-process
# scoring (`lingua2-batch bench-job --device cuda`).
#
#   scripts/gpu_check.sh            on a machine with CUDA (results in $OUT, else a fresh temp folder)
#   scripts/gpu_check.sh --dry-run  on any machine: every step on CPU with the tiny model and a few
#                                   records, to check the script itself; the figures mean nothing
#   scripts/gpu_check.sh --only build_checkpoint,job_vs_in_process   just these steps (a rerun)
#
# Writes $OUT/gpu_check.jsonl (one JSON object per line: each bench line tagged with its step, plus
# one line per step with its exit code and seconds), $OUT/gpu_check.log and $OUT/gpu_tests.xml.
# Without CUDA (and without --dry-run) the tests are collected and skipped with their reason, the
# benchmarks are not run, and the script says so.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
LIMIT_SCALE=1  # the step limits below are for the GPU machine; a dry run on a busy CPU gets more time
ONLY=""        # --only STEP,STEP: run just these steps (a rerun of some figures; later steps need build_checkpoint)
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 LIMIT_SCALE=4 ;;
        --only) ONLY=",$2,"; shift ;;
        *) echo "usage: $0 [--dry-run] [--only STEP,STEP...]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_DIR=${OUT:-$(mktemp -d -t lingua2-gpu-check-XXXXXX)}
mkdir -p "$OUT_DIR"
RESULTS="$OUT_DIR/gpu_check.jsonl"
LOG="$OUT_DIR/gpu_check.log"
: > "$RESULTS"
: > "$LOG"
WORK=$(mktemp -d -t lingua2-gpu-work-XXXXXX)  # the 2.2 GB checkpoint stays out of $OUT
trap 'rm -rf "$WORK"' EXIT

say() { printf '%s\n' "gpu_check: $*" | tee -a "$LOG" >&2; }

# run NAME TIMEOUT_S COMMAND...: runs a step, tags its JSON lines with the step, records exit code and time
run() {
    local name=$1 limit=$(( $2 * LIMIT_SCALE )) started status
    shift 2
    if [ -n "$ONLY" ] && [ "${ONLY#*,$name,}" = "$ONLY" ]; then
        printf '{"step": "%s", "skipped": "not in --only"}\n' "$name" >> "$RESULTS"
        return 0
    fi
    say "$name: $*"
    started=$(date +%s)
    timeout "$limit" "$@" > "$WORK/$name.out" 2> "$WORK/$name.err"
    status=$?
    cat "$WORK/$name.out" "$WORK/$name.err" >> "$LOG"
    sed -n "s/^{/{\"step\": \"$name\", /p" "$WORK/$name.out" >> "$RESULTS"
    printf '{"step": "%s", "exit_code": %d, "seconds": %d%s}\n' "$name" "$status" "$(( $(date +%s) - started ))" \
        "$([ "$status" = 124 ] && echo ', "timed_out": true')" >> "$RESULTS"
    [ "$status" = 0 ] || say "$name: exit code $status (124: ran past ${limit}s); see $LOG"
    tail -n 3 "$WORK/$name.err" >&2
}

"$PYTHON" - >> "$RESULTS" <<'PY'
import json, os, torch
cuda = torch.cuda.is_available()
print(json.dumps({"step": "environment", "torch": torch.__version__, "cuda_available": cuda,
                  "device": torch.cuda.get_device_name() if cuda else None,
                  "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
                  "cpu_cores": os.cpu_count()}))
PY
HAS_CUDA=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
command -v nvidia-smi > /dev/null && nvidia-smi >> "$LOG" 2>&1

run gpu_tests 60 "$PYTHON" -m pytest -q -m gpu tests/test_gpu.py -rs -p no:cacheprovider --junitxml="$OUT_DIR/gpu_tests.xml"
grep -E "^(SKIPPED|FAILED|ERROR)|(passed|failed|skipped|error)" "$WORK/gpu_tests.out" | tail -n 12 >&2

if [ "$HAS_CUDA" != 1 ] && [ "$DRY_RUN" = 0 ]; then
    say "no CUDA device (torch.cuda.is_available() is False): the GPU tests above were skipped and no GPU benchmark ran"
    echo '{"step": "gpu_benchmarks", "skipped": "no CUDA device"}' >> "$RESULTS"
    exit 0
fi

BENCH=("$PYTHON" -m lingua2_batch bench)
if [ "$DRY_RUN" = 1 ]; then
    say "dry run: every step on CPU with the tiny model and 4 records; the figures mean nothing"
    # bfloat16 asked for explicitly, so that the decision-agreement line (CUDA's default) is exercised too
    DEVICE=(--device cpu) DTYPE=(--dtype bfloat16) SIZE=tiny DOCS=(--documents 4) RUNS=1 REPEAT_LARGE=1 REPEAT_COMPAT=1
    JOB_ROWS=8
else
    DEVICE=(--device cuda) DTYPE=() SIZE=large DOCS=() RUNS=2 REPEAT_LARGE=8 REPEAT_COMPAT=2 JOB_ROWS=2000
fi

# One checkpoint for all large runs; the folder name tells the reference which model family it is.
MODEL="$WORK/scratch-$SIZE-xlm-roberta-large"
run build_checkpoint 45 "$PYTHON" -c "
import sys
from lingua2_batch.bench import model_size
from lingua2_batch.model.scratch import build_checkpoint
build_checkpoint(sys.argv[1], 'sentencepiece', size=model_size(sys.argv[2]))" "$MODEL" "$SIZE"

# extractive, default precision (bf16 on CUDA): tokens/s, MFU, idle share, memory, agreement vs float32
run large_extractive_default 90 "${BENCH[@]}" --model "$MODEL" "${DEVICE[@]}" --compat none "${DTYPE[@]}" \
    --repeat "$REPEAT_LARGE" --runs "$RUNS" "${DOCS[@]}"
# what mixed precision (the default) costs and buys on the device: float32, mixed bf16, every weight bf16
run large_precisions 60 "${BENCH[@]}" --model "$MODEL" "${DEVICE[@]}" --compare-precisions \
    --repeat "$REPEAT_LARGE" --runs "$RUNS" "${DOCS[@]}"
# compat mode on CUDA: float32, identical outputs to the reference on the same device
run large_compat_float32 50 "${BENCH[@]}" --model "$MODEL" "${DEVICE[@]}" --compat llmlingua \
    --repeat "$REPEAT_COMPAT" --runs "$RUNS" "${DOCS[@]}"
# the Ray job on the GPU next to in-process compress_batch on the same rows and device (goal >= 0.9): one
# replica holding the GPU and two sharing it (num_gpus 0.5 each), each working on one unit at a time or on
# two (replica_concurrency, threads): which way the host's work best overlaps the GPU's
run job_vs_in_process 140 "$PYTHON" -m lingua2_batch bench-job --model "$MODEL" "${DEVICE[@]}" --rows "$JOB_ROWS" \
    --replicas 1,2 --concurrency 1,2 --workdir "$WORK/bench-job"
# RAG passages with the small model: Python-bound on the host, padding-bound for the reference
run small_paragraphs_compat 35 "${BENCH[@]}" --size "$([ "$DRY_RUN" = 1 ] && echo tiny || echo small)" \
    "${DEVICE[@]}" --compat llmlingua --unit paragraphs --runs "$RUNS" "${DOCS[@]}"

say "done: $(grep -c '"measure' "$RESULTS") figures in $RESULTS"
