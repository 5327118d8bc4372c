#!/usr/bin/env bash
# Step time and tokens/s of each training stage on the `tiny` preset (CPU, release build).
# Usage: scripts/stage-timings.sh [OUT_DIR]   (default runs/timings; about ten minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/timings}
cargo build --release -q -p cooper-cli
BIN=target/release/cooper
rm -rf "$OUT" && mkdir -p "$OUT"
"$BIN" world --seed 21 --scenes 20 --out "$OUT/world" > /dev/null
"$BIN" init --preset tiny --out "$OUT/tiny" > /dev/null
common=(--model "$OUT/tiny" --set optim.warmup_steps=0 --set optim.lr=1e-3)
"$BIN" train ae "${common[@]}" --data "$OUT/world/stage1_depth.jsonl" "$OUT/world/stage1_seg.jsonl" \
  --out "$OUT/ae" --steps 20 --set ae.batch_size=4 --set ae.crop_size=64
"$BIN" train amg "${common[@]}" --data "$OUT/world/stage1_depth.jsonl" "$OUT/world/stage1_seg.jsonl" \
  --out "$OUT/amg" --steps 20 --set data.expected_num_tokens=2048
"$BIN" train sft "${common[@]}" --data "$OUT/world/sft_interleaved.jsonl" \
  --out "$OUT/sft" --steps 20 --set data.expected_num_tokens=4096
"$BIN" train grpo "${common[@]}" --init-from "$OUT/sft/model" --data "$OUT/world/rl.jsonl" \
  --out "$OUT/grpo" --steps 2 --set optim.grad_accum_steps=8 --set grpo.num_generations=4 \
  --set grpo.max_think_tokens=256 --set grpo.flow_steps=10
