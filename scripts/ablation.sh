#!/usr/bin/env bash
# The paper's ablation in miniature, on top of a finished `scripts/train-default.sh OUT_DIR` run
# (its world, tokenizer, autoencoder and stage-1 model are reused, so every row shares them):
#
#   base  no stage 1: interleaved SFT + GRPO from the autoencoder-only model, `cooper` mode
#   pe    stage 1, then SFT on text chains (answering only), `pe` mode: depth and segmentation
#         maps from the stage-1 generator are put in the context before the answer
#   re    stage 1, SFT + GRPO on text chains, `re` mode (text-only reasoning)
#   full  stage 1, interleaved SFT + GRPO (the default model), `cooper` mode
#
# All rows use the same step counts as the default recipe. The held-out benchmark is the recipe's
# held-out world (seed 424242, never used in training). It also scores the stage-1 model's depth
# (AbsRel, delta1 after scale-and-shift alignment) and segmentation (mIoU) on held-out scenes.
#
# Usage: scripts/ablation.sh [OUT_DIR]   (default runs/default)
# Knobs: SFT_STEPS, GRPO_STEPS, COOPER_BIN (scripts/recipe.sh, shared with train-default.sh), EVAL_LIMIT, MAP_IMAGES.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/default}
EVAL_LIMIT=${EVAL_LIMIT:-500}
MAP_IMAGES=${MAP_IMAGES:-24}
source scripts/recipe.sh
for need in "$OUT/amg/model" "$OUT/grpo/model"; do
  [[ -f "$need/llm_config.json" ]] || { echo "missing $need: run scripts/train-default.sh $OUT first" >&2; exit 1; }
done
W="$OUT/world"

# Text-only reasoning: SFT on text chains under the VLM thinking prompt, then GRPO in `re` mode.
stage sft-text sft --model "$OUT/ae/model" --init-from "$OUT/amg/model" --data "$W/sft_text.jsonl" \
  --steps "$SFT_STEPS" "${SFT_SET[@]}" --set sft.system_prompt=vlm_think
stage grpo-text grpo --model "$OUT/ae/model" --init-from "$OUT/sft-text/model" --data "$W/rl.jsonl" \
  --steps "$GRPO_STEPS" "${GRPO_SET[@]}" --set grpo.rollout_mode=re
# No stage 1: the same interleaved SFT and GRPO, started from the autoencoder-only model.
stage sft-base sft --model "$OUT/ae/model" --data "$W/sft_interleaved.jsonl" --steps "$SFT_STEPS" "${SFT_SET[@]}"
stage grpo-base grpo --model "$OUT/ae/model" --init-from "$OUT/sft-base/model" --data "$W/rl.jsonl" \
  --steps "$GRPO_STEPS" "${GRPO_SET[@]}"

evaluate() { # evaluate ROW MODEL MODE
  "$BIN" eval --model "$2" --bench "$OUT/heldout/eval.tsv" --mode "$3" --out "$OUT/ablation/$1" \
    "${EVAL_SET[@]}" --limit "$EVAL_LIMIT" > /dev/null
  stamp "eval $1 ($3): $OUT/ablation/$1/report.md"
}
evaluate base "$OUT/grpo-base/model" cooper
evaluate pe "$OUT/sft-text/model" pe
evaluate re "$OUT/grpo-text/model" re
# The recipe already evaluated the full model on these items: reuse its answers (the evaluation
# resumes, so nothing is asked again) when it answered exactly EVAL_LIMIT of them.
if [[ ! -d "$OUT/ablation/full" && -f "$OUT/eval/predictions.jsonl" ]] &&
  (( $(wc -l < "$OUT/eval/predictions.jsonl") == EVAL_LIMIT )); then
  cp -r "$OUT/eval" "$OUT/ablation/full"
fi
evaluate full "$OUT/grpo/model" cooper

# Stage-1 maps of held-out scenes against their exact ground truth.
maps="$OUT/ablation/maps"
mkdir -p "$maps/depth" "$maps/seg" "$maps/depth-gt" "$maps/seg-gt"
n=0
for img in "$OUT"/heldout/images/*.png; do
  (( n++ < MAP_IMAGES )) || break
  name=$(basename "$img")
  [[ -f "$maps/depth/$name" ]] || "$BIN" depth --model "$OUT/amg/model" --image "$img" --steps 20 \
    --out "$maps/depth-rgb.png" --depth16 "$maps/depth/$name" > /dev/null
  [[ -f "$maps/seg/$name" ]] || "$BIN" segment --model "$OUT/amg/model" --image "$img" --steps 20 \
    --out "$maps/seg/$name" > /dev/null
  cp "$OUT/heldout/depth/$name" "$maps/depth-gt/$name"
  cp "$OUT/heldout/seg/$name" "$maps/seg-gt/$name"
done
"$BIN" eval-depth --pred "$maps/depth" --gt "$maps/depth-gt" --scale-factor 1000 --max-depth 50 \
  --out "$maps/depth.json" | tail -n 12
"$BIN" eval-seg --pred "$maps/seg" --gt "$maps/seg-gt" --palette "$OUT/heldout/palette.json" \
  --out "$maps/seg.json" | tail -n 16
stamp "stage-1 maps of $MAP_IMAGES held-out scenes: $maps"
for row in base pe re full; do echo "## $row"; cat "$OUT/ablation/$row/report.md"; done
