#!/usr/bin/env bash
# The option-lookup diagnostics of docs/results.md ("Why every run answers one letter per
# category"): can the default model learn to write the letter of the option it has just named?
#
# Usage: scripts/diagnostics/option-lookup.sh RUN OUT
#   RUN: a folder of `GROUNDED=1 scripts/train-default.sh RUN` (its world, heldout, base, ae and
#   ground stages are used); OUT: where the rows, models and reports go.
# About 13,600 SFT steps, some 2.5 hours on 2 cores (0.43 s a step for text-only rows, 1.7 with
# pictures; never timed end to end). An experiment whose model folder exists is skipped.
# QUICK=1 runs every step with tiny step and row counts, on a `QUICK=1 GROUNDED=1
# scripts/train-default.sh` RUN: a check that the script works, whose figures mean nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=$1 OUT=$2
BIN=${COOPER_BIN:-target/release/cooper}
[[ -x "$BIN" ]] || cargo build --release -q -p cooper-cli
ROWS="python3 scripts/diagnostics/option_rows.py"
# steps N / rows N: N, or a tiny count under QUICK=1.
steps() { if [[ "${QUICK:-0}" == 1 ]]; then echo 3; else echo "$1"; fi; }
rows() { if [[ "${QUICK:-0}" == 1 ]]; then echo 40; else echo "$1"; fi; }
mkdir -p "$OUT"
[[ -f "$OUT/eval_hint1.tsv" ]] || $ROWS direct "$RUN/world" "$RUN/heldout" "$OUT"
[[ -f "$OUT/lookup.jsonl" ]] || $ROWS lookup "$OUT/lookup.jsonl" "$(rows 20000)" 6 1
[[ -f "$OUT/copy.jsonl" ]] || $ROWS copy "$OUT/copy.jsonl" "$(rows 5000)" 6 2
[[ -f "$OUT/induction.jsonl" ]] || $ROWS induction "$RUN/world" "$OUT/induction.jsonl" "$(rows 20000)" 3
[[ -f "$OUT/named.jsonl" ]] || $ROWS named "$OUT/named.jsonl" "$(rows 20000)" 6 1
[[ -f "$OUT/restated.jsonl" ]] || $ROWS restated "$OUT/restated.jsonl" "$(rows 20000)" 6 1
[[ -f "$OUT/lookup-single-2.jsonl" ]] || $ROWS lookup "$OUT/lookup-single-2.jsonl" "$(rows 40000)" 1 5 2
[[ -f "$OUT/lookup-single.jsonl" ]] || $ROWS lookup "$OUT/lookup-single.jsonl" "$(rows 40000)" 1 5
[[ -f "$OUT/probe-lookup.jsonl" ]] || $ROWS lookup "$OUT/probe-lookup.jsonl" 200 6 99
[[ -f "$OUT/probe-induction.jsonl" ]] || $ROWS induction-probe "$RUN/world" "$OUT/probe-induction.jsonl" 200 123
[[ -f "$OUT/probe-induction-no-copy.jsonl" ]] ||
  $ROWS induction-probe "$RUN/world" "$OUT/probe-induction-no-copy.jsonl" 200 123 no-copy

# The recipe's SFT settings without the system prompt, the ViT frozen.
SFT=(--set optim.warmup_steps=50 --set data.expected_num_tokens=2048 --set run.save_every=100000
  --set sft.match_inference_context=true --set sft.omit_system_prompt=true --set freeze.vit=true)
# sft NAME FROM DATA STEPS [--set ...]: the run, then the mean CE of each 100-step window, per
# token and per problem (15 answer tokens). The model's configuration is read from $CONFIG
# (default RUN/ae/model).
sft() {
  local name=$1 from=$2 data=$3 steps=$4; shift 4
  [[ -f "$OUT/$name/model/llm_config.json" ]] || "$BIN" train sft --model "${CONFIG:-$RUN/ae/model}" \
    --init-from "$from" --data "$data" --steps "$(steps "$steps")" --set optim.lr=1e-3 "${SFT[@]}" "$@" \
    --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  python3 - "$OUT/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ce"' in l]
w = [rows[a:a + 100] for a in range(0, len(rows), 100)]
per_token = [sum(r["ce"] * r["ce_tokens"] for r in x) / sum(r["ce_tokens"] for r in x) for x in w]
# A lookup or direct answer is 15 scored tokens; the induction rows' figure is the per-token one.
print(sys.argv[2], "mean CE by 100-step window, per token:", [round(c, 3) for c in per_token],
      "per 15 tokens:", [round(15 * c, 3) for c in per_token])
PY
}
# probe MODEL DATA: mean CE per token of the model folder MODEL on DATA at learning rate 0.
probe() {
  rm -rf "$OUT/probe.tmp"
  "$BIN" train sft --model "$RUN/ae/model" --init-from "$1" --data "$2" --steps "$(steps 10)" \
    --set optim.lr=0 --set optim.warmup_steps=0 --set data.expected_num_tokens=2048 \
    --set sft.match_inference_context=true --set sft.omit_system_prompt=true --set freeze.vit=true \
    --out "$OUT/probe.tmp" > "$OUT/probe.log" 2>&1
  python3 - "$OUT/probe.tmp/metrics.jsonl" "$(basename "$1")" "$(basename "$2")" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"ce"' in l]
print(sys.argv[2], "on", sys.argv[3], round(sum(r["ce"] * r["ce_tokens"] for r in rows) / sum(r["ce_tokens"] for r in rows), 4), "nats/token")
PY
  rm -rf "$OUT/probe.tmp"
}
direct_eval() {
  "$BIN" eval --model "$OUT/$1/model" --bench "$OUT/eval_hint1.tsv" --mode direct --no-progress \
    --out "$OUT/$1-eval" | grep -E '^\| (color|shape|spatial_grid|\*\*overall)'
}

# With pictures: the question carries "Hint: it is <the answer's option text>."
sft hint-from-ground "$RUN/ground/model" "$OUT/train_hint1.jsonl" 300 && direct_eval hint-from-ground
sft hint-from-base "$RUN/base" "$OUT/train_hint1.jsonl" 600 && direct_eval hint-from-base
[[ -d "$OUT/base-qk3" ]] || python3 scripts/diagnostics/scale_qk_norms.py "$RUN/base" "$OUT/base-qk3" 3
sft hint-from-base-qk3 "$OUT/base-qk3" "$OUT/train_hint1.jsonl" 600 && direct_eval hint-from-base-qk3
# Text only, six problems a row.
sft lookup "$RUN/base" "$OUT/lookup.jsonl" 800
sft lookup-lr3e-3 "$RUN/base" "$OUT/lookup.jsonl" 800 --set optim.lr=3e-3
sft copy "$RUN/base" "$OUT/copy.jsonl" 300
# Induction rows: one run of 5,000 steps, a checkpoint every 500, each checkpoint probed.
sft induction "$RUN/base" "$OUT/induction.jsonl" 5000 --set run.save_every=500 --set run.keep_last=20
# (--init-from a checkpoint takes its EMA weights over those its run started from, the base.)
for ckpt in "$OUT"/induction/0*/; do
  for p in probe-induction probe-induction-no-copy probe-lookup; do probe "${ckpt%/}" "$OUT/$p.jsonl"; done
done
# The same induction rows with a RoPE base of 10,000 (Qwen2's is 10^6), configuration and weights,
# and with the QK-norm weights also scaled by 3.
for d in ae-rope1e4 base-rope1e4; do
  src=$RUN/ae/model; [[ $d == base-rope1e4 ]] && src=$RUN/base
  [[ -d "$OUT/$d" ]] || { cp -r "$src" "$OUT/$d.tmp" &&
    sed -i 's/"rope_theta": 1000000.0/"rope_theta": 10000.0/' "$OUT/$d.tmp/llm_config.json" &&
    grep -q '"rope_theta": 10000.0' "$OUT/$d.tmp/llm_config.json" && mv "$OUT/$d.tmp" "$OUT/$d"; }
done
[[ -d "$OUT/base-rope1e4-qk3" ]] ||
  python3 scripts/diagnostics/scale_qk_norms.py "$OUT/base-rope1e4" "$OUT/base-rope1e4-qk3" 3
CONFIG=$OUT/ae-rope1e4 sft induction-rope1e4 "$OUT/base-rope1e4" "$OUT/induction.jsonl" 600
CONFIG=$OUT/ae-rope1e4 sft induction-rope1e4-qk3 "$OUT/base-rope1e4-qk3" "$OUT/induction.jsonl" 600
# The answer names the option's text before its letter; restated, the options are also given
# text-first, so that the letter can be copied as the word after a match (what induction does).
for start in base induction-at-0003500 induction; do
  from=$OUT/$start/model
  [[ $start == base ]] && from=$RUN/base
  [[ $start == induction-at-0003500 ]] && from=$OUT/$start
  [[ -d "$from" ]] || { echo "$from: none (QUICK=1 saves no step-3,500 checkpoint)"; continue; }
  steps=300; [[ $start == base ]] && steps=500
  sft "named-from-$start" "$from" "$OUT/named.jsonl" "$steps"
  sft "restated-from-$start" "$from" "$OUT/restated.jsonl" "$steps"
done
# One lookup a row: two options, 2-4 options, and 2-4 options after two (a curriculum); the
# curriculum's model on the six-a-row lookup probe, then on the questions with pictures.
sft lookup-single-2 "$RUN/base" "$OUT/lookup-single-2.jsonl" 500
sft lookup-single "$RUN/base" "$OUT/lookup-single.jsonl" 500
sft lookup-single-after-2 "$OUT/lookup-single-2/model" "$OUT/lookup-single.jsonl" 500
probe "$OUT/lookup-single-after-2/model" "$OUT/probe-lookup.jsonl"
sft hint-after-curriculum "$OUT/lookup-single-after-2/model" "$OUT/train_hint1.jsonl" 300 &&
  direct_eval hint-after-curriculum
