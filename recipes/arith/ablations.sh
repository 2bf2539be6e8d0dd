#!/usr/bin/env bash
# Ablations of the spoken-arithmetic model, by config override only (issue: embedded default).
# Usage: [MODEL=DIR] [LIMIT=N] bash recipes/arith/ablations.sh CORPUS_DIR OUT_DIR [SCALE]
#   CORPUS_DIR: from `diffuspeech recipe arith prepare`; SCALE multiplies every training stage's steps.
#   MODEL: the model whose decoding variants are measured (default: the scaled diffusion run);
#   LIMIT: evaluate the first N dev rows only (default: all).
#   PARALLEL=1: run the three trainings at once, one thread each (on 2 cores: ~1.5x the
#   throughput of one 2-thread run after another; small models scale poorly across threads).
# Each training run reuses the recipe; each evaluation writes OUT_DIR/<name>/eval/metrics.json.
set -euo pipefail
data=${1:?corpus folder}; out=${2:?output folder}; scale=${3:-0.15}; limit=${LIMIT:-}
mkdir -p "$out"

NOTHINK_S2S='tasks.s2s.segments=[{field: question_speech, modality: speech, role: condition, max_len: 112}, {field: answer_text, modality: text, role: target, max_len: 2}, {field: answer_speech, modality: speech, role: target, max_len: 36}]'
NOTHINK_S2T='tasks.s2t.segments=[{field: question_speech, modality: speech, role: condition, max_len: 112}, {field: answer_text, modality: text, role: target, max_len: 2}]'
NOTHINK_T2T='tasks.t2t.segments=[{field: question_text, modality: text, role: condition}, {field: answer_text, modality: text, role: target, max_len: 2}]'
NOTHINK_LM='tasks.lm.segments=[{field: question_text, modality: text, role: target, max_len: 6}]'

train() {  # name, overrides...
  local name=$1; shift
  diffuspeech recipe arith train --data "$data" --out "$out/$name" --scale "$scale" "$@"
}
evaluate() {  # name, model dir, overrides...
  local name=$1 model=$2; shift 2
  diffuspeech eval arith --data "$data" --model "$model" --out "$out/$name/eval" --no-progress ${limit:+--limit "$limit"} "$@" --tasks s2s s2t
}

# 1. trained variants (same size, same steps)
launch() {  # name, overrides...: in the background with one thread when PARALLEL=1
  if [ "${PARALLEL:-0}" = 1 ]; then OMP_NUM_THREADS=1 train "$@" > "$out/$1.log" 2>&1 & else train "$@"; fi
}
# everything by diffusion (arith-mdm's recipe) and the AR baseline, without speed perturbation as measured
MDM=(--speed-perturb none attention.name=bidirectional objective.name=diffusion generation.mode=diffusion)
launch diffusion "${MDM[@]}"
launch nothink "${MDM[@]}" "$NOTHINK_S2S" "$NOTHINK_S2T" "$NOTHINK_T2T" "$NOTHINK_LM"
launch ar --speed-perturb none attention.name=causal objective.name=autoregressive generation.mode=autoregressive
wait
evaluate diffusion "$out/diffusion/model"
evaluate nothink "$out/nothink/model"
evaluate ar "$out/ar/model"

# 2. decoding variants of one trained model (MODEL, default: the diffusion run above)
model=${MODEL:-$out/diffusion/model}
for steps in 4 8 16 32; do evaluate "steps$steps" "$model" generation.steps=$steps; done
evaluate threshold "$model" sampler.name=threshold sampler.threshold=0.9 generation.steps=32
