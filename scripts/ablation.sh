#!/usr/bin/env bash
# The paper's ablation in miniature, on top of a finished `scripts/train-default.sh OUT_DIR` run
# (its world, tokenizer, autoencoder and stage-1 model are reused, so every row shares them):
#
#   base  no stage 1: interleaved SFT + GRPO from the autoencoder-only model, `cooper` mode
#   pe    stage 1, then SFT on text chains (answering only), `pe` mode: depth and segmentation
#         maps from the stage-1 generator are put in the context before the answer
#   re    stage 1, SFT + GRPO on text chains, `re` mode (text-only reasoning)
#   full  stage 1, interleaved SFT + GRPO (the fourth run's recipe), `cooper` mode
#
# It ablates the script's recipe without knobs (the fourth run of docs/results.md, embedded until
# the twenty-first run); runs made with GROUNDED=1, as the embedded twenty-first run was, are
# refused. Every SFT row also learns the world's scene descriptions (sft_describe.jsonl), as the
# default recipe does. All rows use the same step counts as the default recipe. The held-out benchmark is
# the recipe's held-out world (seed 424242, never used in training). It also scores the stage-1
# model's depth (AbsRel, delta1 after scale-and-shift alignment) and segmentation (mIoU) on
# held-out scenes.
#
# Usage: scripts/ablation.sh [OUT_DIR]   (default runs/default)
# Knobs: SFT_STEPS, GRPO_STEPS, COOPER_BIN (scripts/recipe.sh, shared with train-default.sh),
# EVAL_LIMIT, MAP_IMAGES, and PARALLEL=1 to train the text rows and the base row side by side
# (one thread each).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/default}
EVAL_LIMIT=${EVAL_LIMIT:-500}
MAP_IMAGES=${MAP_IMAGES:-24}
source scripts/recipe.sh
for need in "$OUT/amg/model" "$OUT/grpo/model"; do
  [[ -f "$need/llm_config.json" ]] || { echo "missing $need: run scripts/train-default.sh $OUT first" >&2; exit 1; }
done
[[ -d "$OUT/ground" ]] && { echo "$OUT was made with GROUNDED=1; the ablation supports only the default recipe" >&2; exit 1; }
W="$OUT/world"

evaluate() { # evaluate ROW MODEL MODE
  "$BIN" eval --model "$2" --bench "$OUT/heldout/eval.tsv" --mode "$3" --out "$OUT/ablation/$1" \
    "${EVAL_SET[@]}" --limit "$EVAL_LIMIT" > /dev/null
  stamp "eval $1 ($3): $OUT/ablation/$1/report.md"
}

# Text-only reasoning: SFT on text chains under the VLM thinking prompt, then GRPO in `re` mode;
# the SFT model alone is the `pe` row.
text_rows() {
  stage sft-text sft --model "$OUT/ae/model" --init-from "$OUT/amg/model" \
    --data "$W/sft_text.jsonl" "$W/$DESCRIPTIONS" --steps "$SFT_STEPS" "${SFT_SET[@]}" \
    --set sft.system_prompt=vlm_think
  stage grpo-text grpo --model "$OUT/ae/model" --init-from "$OUT/sft-text/model" \
    --data "$W/rl.jsonl" --steps "$GRPO_STEPS" "${GRPO_SET[@]}" --set grpo.rollout_mode=re
  evaluate pe "$OUT/sft-text/model" pe
  evaluate re "$OUT/grpo-text/model" re
}

# No stage 1: the same interleaved SFT and GRPO, started from the autoencoder-only model. Then the
# stage-1 model's maps of held-out scenes against their exact ground truth.
base_row_and_maps() {
  stage sft-base sft --model "$OUT/ae/model" \
    --data "$W/sft_interleaved.jsonl" "$W/$DESCRIPTIONS" --steps "$SFT_STEPS" "${SFT_SET[@]}"
  stage grpo-base grpo --model "$OUT/ae/model" --init-from "$OUT/sft-base/model" \
    --data "$W/rl.jsonl" --steps "$GRPO_STEPS" "${GRPO_SET[@]}"
  evaluate base "$OUT/grpo-base/model" cooper

  local maps="$OUT/ablation/maps" n=0 img name
  mkdir -p "$maps/depth" "$maps/seg" "$maps/depth-gt" "$maps/seg-gt"
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
}

mkdir -p "$OUT/ablation"
if [[ "${PARALLEL:-0}" == 1 ]]; then
  # The two branches side by side, one thread each (candle reads RAYON_NUM_THREADS): on 2 cores
  # this finishes sooner than running them one after the other with two threads each, because
  # neither a small model's matrix products nor decoding keep two threads busy.
  echo "PARALLEL=1: logs in $OUT/ablation/text.log and $OUT/ablation/base.log"
  RAYON_NUM_THREADS=1 text_rows > "$OUT/ablation/text.log" 2>&1 &
  text_pid=$!
  RAYON_NUM_THREADS=1 base_row_and_maps > "$OUT/ablation/base.log" 2>&1 &
  base_pid=$!
  wait "$text_pid" || { echo "text rows failed: $OUT/ablation/text.log" >&2; kill "$base_pid"; exit 1; }
  wait "$base_pid" || { echo "base row failed: $OUT/ablation/base.log" >&2; exit 1; }
  cat "$OUT/ablation/text.log" "$OUT/ablation/base.log" | grep '^\[' || true
else
  text_rows
  base_row_and_maps
fi

# The recipe already evaluated the full model on these items: reuse its answers (the evaluation
# resumes, so nothing is asked again) when it answered exactly EVAL_LIMIT of them.
if [[ ! -d "$OUT/ablation/full" && -f "$OUT/eval/predictions.jsonl" ]] &&
  (( $(wc -l < "$OUT/eval/predictions.jsonl") == EVAL_LIMIT )); then
  cp -r "$OUT/eval" "$OUT/ablation/full"
fi
evaluate full "$OUT/grpo/model" cooper
for row in base pe re full; do echo "## $row"; cat "$OUT/ablation/$row/report.md"; done
