#!/usr/bin/env bash
# The default model, end to end with the project's own commands: a synthetic world, a BPE
# tokenizer, the `default` preset, then ae -> amg (stage 1) -> sft (stage 2a) -> grpo (stage 2b),
# and an evaluation on a held-out world (a seed never used in training).
#
# Without knobs it runs the fourth run's recipe (docs/results.md; what scripts/ablation.sh
# ablates). The embedded default model is the thirty-second run's: MAX_DISTANCE=4 GROUNDED=1
# VIT_COLOR=1 PERCEIVE=1 PERCEIVE_STEPS=0 PERCEIVE_MIX=8000 DESCRIPTION_THOUGHTS=1 TEXT_ANSWERS=1
# REHEARSE_GEN=sft CONSTRAIN_ANSWERS=1 RELATION_REASONS=1 DESCRIBE_FIRST=1 SFT_STEPS=2000
# GRPO_STEPS=40 scripts/train-default.sh OUT (71 minutes from an empty folder on 2 cores, timed
# in the thirty-fourth run; plus the evaluation). The twenty-first run's knobs, without the
# last three, were embedded before it (60 minutes in one timed run, the twenty-sixth); with
# SFT_STEPS=2000 that took 61 minutes (twenty-seventh run); GROUND_STEPS=300 SFT_STEPS=1100
# answered at chance (twenty-fifth run; docs/results.md).
#
# Usage: scripts/train-default.sh [OUT_DIR]      (default runs/default)
# Knobs (environment): SCENES, EVAL_SCENES, MAX_DISTANCE, EVAL_LIMIT, AE_STEPS, AMG_STEPS,
# SFT_STEPS, GRPO_STEPS (VIT_STEPS, GROUND_STEPS, VIT_COLOR with GROUNDED=1), and
# QUICK=1 for a smoke run of every stage in a few minutes (tiny step counts; not a useful model).
# GROUNDED=1 runs the ninth run's recipe instead (docs/results.md; an experiment): the `vit` stage
# beside ae, the ViT frozen from then on, a grounding SFT on the cell listings (GROUND_STEPS, 400)
# between amg and SFT, chains whose first thought opens with the picture's cell listing, and SFT
# without system prompts that also learns the listings; about two hours on 2 cores, over the issue's
# 90-minute budget. scripts/ablation.sh supports only the default recipe.
# LOOKUP=1 (either recipe; an experiment) teaches the LLM the option lookup on text alone right
# before SFT: LOOKUP_STEPS (500) of two-option lookups, then as many of 2-4 options, about 10
# minutes, from the stage-1 (or grounding) model; SFT then starts from it and keeps LOOKUP_MIX
# (4000) lookups among its rows (docs/results.md, "Why every run answers one letter per
# category": taught before stage 1, the lookup was gone after it).
# PERCEIVE=1 (with GROUNDED=1; an experiment) adds a perception curriculum after grounding: for
# each N in PERCEIVE_OBJECTS ("1"), a world of PERCEIVE_SCENES (8000) scenes holding N objects each
# within PERCEIVE_DISTANCE (4) m, and PERCEIVE_STEPS (1000) SFT steps on its scene descriptions;
# SFT then keeps PERCEIVE_MIX (2000) of each world's descriptions among its rows. About 1.4-1.8
# s/step on 2 cores: with GROUNDED=1 about two hours, over the 90-minute budget. The thirteenth run
# (docs/results.md) then described its pictures far above the shuffled bar, but its chains broke.
# PERCEIVE_STEPS=0 skips the describe-only stage and only mixes the descriptions into SFT (the
# fifteenth run's schedule; with GROUNDED=1 and TEXT_ANSWERS=1, 76 minutes in the sixteenth run).
# DESCRIPTION_THOUGHTS=1 (an experiment) opens every chain's first thought with the picture's scene
# description (`cooper world --description-thoughts`; with GROUNDED=1 in place of the cell listing),
# the text the perception curriculum teaches, and answers counts, existence, colour and shape from
# it. TEXT_ANSWERS=1 (an experiment) makes multiple-choice chains and RL rows answer with the
# option's text, which the evaluation maps to its letter (`cooper world --option-text-answers`);
# the chains then open by restating the options, and RESTATE_STEPS (300) of text-only
# restatements (`sft_restate.jsonl`) run right before SFT, which keeps them among its rows.
# RELATION_REASONS=1 (with DESCRIPTION_THOUGHTS=1; an experiment) makes spatial-relation and
# depth-order chains work their verdict out from the description: both objects' places or
# distances, the relation that holds, then the question's own phrase (`cooper world
# --relation-reasons`).
# VERDICT_FIRST=1 (an experiment) opens yes/no chains (existence, occlusion, spatial relation,
# depth order) with the question word for word, where the picture puts its objects, and the
# verdict, in place of the description (`cooper world --verdict-first`).
# DESCRIPTION_LOOKUPS=1 (with DESCRIPTION_THOUGHTS=1; an experiment) teaches the reading of an
# answer off the description alone, right before SFT: DESCRIPTION_LOOKUP_STEPS (300) on text-only
# rows that give a question and its chain's description and learn the rest of the thought
# (`sft_description_lookups.jsonl`); SFT keeps the first DESCRIPTION_LOOKUP_MIX (2000) among its rows.
# In the twenty-fourth run the verdicts then followed the descriptions, but the descriptions named
# the question's objects and one template ended most chains (32.4 % on 500; docs/results.md).
# TARGET_FIRST=1 (an experiment) makes existence and spatial-relation (and depth-order yes/no)
# chains say what the question looks for, copied from it, right before their verdict ("The
# question looks for a cyan object."; `cooper world --target-first`).
# GIVEN_DESCRIPTIONS=1 (with DESCRIPTION_THOUGHTS=1; an experiment) gives the objects listed by
# the chains' opening description as context in their SFT rows instead of teaching them there
# (`cooper world --given-descriptions`), so that no question is in view when the model learns to
# list what it sees; the main SFT then lists the description rows DESCRIBE_REPEATS (3) times, its
# only full-scene lists.
# In the thirty-first run the chains then wrote gibberish where the list goes (26.9 % on the first
# 500; docs/results.md): the list learnt after the description prompt does not carry over.
# DESCRIBE_FIRST=1 (with DESCRIPTION_THOUGHTS=1, not with GIVEN_DESCRIPTIONS=1; an experiment)
# writes every chain describe-first (`cooper world --describe-first`): after the picture, the
# description request and the description, learnt before the question is in view, then the
# question and a chain that reads it; SFT records it (`sft.describe_first`), so that `ask`, `eval`
# and GRPO ask the model for its description before the question too.
# SFT_TRAIN_VIT=1 (with GROUNDED=1; an experiment) trains the pretrained ViT again in the main SFT
# stage (frozen through amg, grounding and the curricula, as before): with it frozen, every run's
# turn after a depth map wrote the segmentation template (docs/results.md, sixteenth run). In the
# seventeenth run it still did, and colour perception was lost: the maps are the cause (the
# text-only stages after amg break the generation path; docs/results.md, seventeenth run).
# REHEARSE_GEN=1 (an experiment) keeps training stage 1's depth and segmentation rows in every
# SFT-kind stage after amg (grounding, the curricula, restate, SFT; `sft.rehearse_generation`), so
# that the text stages do not undo the generation path (docs/results.md, seventeenth run: maps at
# depth AbsRel 0.33 after amg, 0.83 after text-only SFT; 0.32 after grounding with the rows mixed).
# REHEARSE_GEN=sft rehearses them in the main SFT stage only (grounding and the curricula train
# text alone, as without the knob), which is cheaper: those stages run at their text-only speed.
# CONSTRAIN_ANSWERS=1 (either recipe) evaluates with `cooper eval --constrain-answers`: each box
# holds the option the model scores likeliest there (docs/results.md, "Constrained answers").
# A stage whose run folder already holds a finished model is skipped; an interrupted stage is
# resumed from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/default}
if [[ "${QUICK:-0}" == 1 ]]; then
  : "${SCENES:=40}" "${EVAL_SCENES:=10}" "${AE_STEPS:=10}" "${AMG_STEPS:=10}" "${SFT_STEPS:=10}" "${GRPO_STEPS:=2}"
  : "${VIT_STEPS:=10}" "${GROUND_STEPS:=10}" "${LOOKUP_STEPS:=5}" "${PERCEIVE_STEPS:=5}" "${PERCEIVE_SCENES:=20}" "${RESTATE_STEPS:=5}"
  echo "QUICK=1: a smoke run of every stage; the model it makes is not useful"
fi
SCENES=${SCENES:-2000}
CHAINS=${CHAINS:-3}
EVAL_SCENES=${EVAL_SCENES:-100}
EVAL_LIMIT=${EVAL_LIMIT:-500}
AE_STEPS=${AE_STEPS:-250}
AMG_STEPS=${AMG_STEPS:-700}
GROUNDED=${GROUNDED:-0}
VIT_STEPS=${VIT_STEPS:-3000}
GROUND_STEPS=${GROUND_STEPS:-400}
# Weight of the vit stage's object-colour head (vit.color_weight; 0 leaves it out, as in the ninth run).
VIT_COLOR=${VIT_COLOR:-0}
LOOKUP=${LOOKUP:-0}
# Objects stand at most this far from the camera, metres (`cooper world --max-distance`). At the
# default 8 m many are a few pixels wide at 128 px; the twelfth and twentieth runs used 4 (the
# held-out world then uses it too: another benchmark; docs/results.md).
MAX_DISTANCE=${MAX_DISTANCE:-8}
LOOKUP_STEPS=${LOOKUP_STEPS:-500}
LOOKUP_MIX=${LOOKUP_MIX:-4000}
PERCEIVE=${PERCEIVE:-0}
PERCEIVE_OBJECTS=${PERCEIVE_OBJECTS:-1}
PERCEIVE_SCENES=${PERCEIVE_SCENES:-8000}
PERCEIVE_DISTANCE=${PERCEIVE_DISTANCE:-4}
PERCEIVE_STEPS=${PERCEIVE_STEPS:-1000}
PERCEIVE_MIX=${PERCEIVE_MIX:-2000}
DESCRIPTION_THOUGHTS=${DESCRIPTION_THOUGHTS:-0}
TEXT_ANSWERS=${TEXT_ANSWERS:-0}
RELATION_REASONS=${RELATION_REASONS:-0}
VERDICT_FIRST=${VERDICT_FIRST:-0}
TARGET_FIRST=${TARGET_FIRST:-0}
DESCRIPTION_LOOKUPS=${DESCRIPTION_LOOKUPS:-0}
DESCRIPTION_LOOKUP_STEPS=${DESCRIPTION_LOOKUP_STEPS:-300}
DESCRIPTION_LOOKUP_MIX=${DESCRIPTION_LOOKUP_MIX:-2000}
GIVEN_DESCRIPTIONS=${GIVEN_DESCRIPTIONS:-0}
DESCRIBE_FIRST=${DESCRIBE_FIRST:-0}
# How many times the main SFT lists each training scene's description row; with the chains'
# descriptions given rather than learnt, they are the only full-scene descriptions it learns from.
DESCRIBE_REPEATS=${DESCRIBE_REPEATS:-$([[ "$GIVEN_DESCRIPTIONS" == 1 ]] && echo 3 || echo 1)}
RESTATE_STEPS=${RESTATE_STEPS:-300}
SFT_TRAIN_VIT=${SFT_TRAIN_VIT:-0}
REHEARSE_GEN=${REHEARSE_GEN:-0}
if [[ "$PERCEIVE" == 1 && "$GROUNDED" != 1 ]]; then
  echo "PERCEIVE=1 needs GROUNDED=1 (a pretrained ViT, frozen)" >&2
  exit 2
fi
if [[ "$RELATION_REASONS" == 1 && "$DESCRIPTION_THOUGHTS" != 1 ]]; then
  echo "RELATION_REASONS=1 needs DESCRIPTION_THOUGHTS=1 (it reasons from the description)" >&2
  exit 2
fi
if [[ "$DESCRIPTION_LOOKUPS" == 1 && ( "$DESCRIPTION_THOUGHTS" != 1 || "$VERDICT_FIRST" == 1 ) ]]; then
  echo "DESCRIPTION_LOOKUPS=1 needs DESCRIPTION_THOUGHTS=1 without VERDICT_FIRST=1 (chains read off the description)" >&2
  exit 2
fi
if [[ "$GIVEN_DESCRIPTIONS" == 1 && ( "$DESCRIPTION_THOUGHTS" != 1 || "$VERDICT_FIRST" == 1 ) ]]; then
  echo "GIVEN_DESCRIPTIONS=1 needs DESCRIPTION_THOUGHTS=1 without VERDICT_FIRST=1 (chains that open with the description)" >&2
  exit 2
fi
if [[ "$DESCRIBE_FIRST" == 1 && ( "$DESCRIPTION_THOUGHTS" != 1 || "$GIVEN_DESCRIPTIONS" == 1 ) ]]; then
  echo "DESCRIBE_FIRST=1 needs DESCRIPTION_THOUGHTS=1 without GIVEN_DESCRIPTIONS=1 (it moves the learnt description before the question)" >&2
  exit 2
fi
if [[ "$SFT_TRAIN_VIT" == 1 && "$GROUNDED" != 1 ]]; then
  echo "SFT_TRAIN_VIT=1 needs GROUNDED=1 (the default recipe trains the ViT in SFT already)" >&2
  exit 2
fi
source scripts/recipe.sh
mkdir -p "$OUT"

# GROUNDED=1 chains open their first thought with the cell listing (`cooper world --listing-thoughts`),
# DESCRIPTION_THOUGHTS=1 ones with the scene description.
WORLD_FLAGS=() LISTING_THOUGHTS=false DESCRIPTION_FLAG=false TEXT_FLAG=false RELATION_FLAG=false
VERDICT_FLAG=false TARGET_FLAG=false GIVEN_FLAG=false FIRST_FLAG=false
if [[ "$DESCRIPTION_THOUGHTS" == 1 ]]; then
  WORLD_FLAGS=(--description-thoughts) DESCRIPTION_FLAG=true
elif [[ "$GROUNDED" == 1 ]]; then
  WORLD_FLAGS=(--listing-thoughts) LISTING_THOUGHTS=true
fi
[[ "$TEXT_ANSWERS" == 1 ]] && WORLD_FLAGS+=(--option-text-answers) TEXT_FLAG=true
[[ "$RELATION_REASONS" == 1 ]] && WORLD_FLAGS+=(--relation-reasons) RELATION_FLAG=true
[[ "$VERDICT_FIRST" == 1 ]] && WORLD_FLAGS+=(--verdict-first) VERDICT_FLAG=true
[[ "$TARGET_FIRST" == 1 ]] && WORLD_FLAGS+=(--target-first) TARGET_FLAG=true
[[ "$GIVEN_DESCRIPTIONS" == 1 ]] && WORLD_FLAGS+=(--given-descriptions) GIVEN_FLAG=true
[[ "$DESCRIBE_FIRST" == 1 ]] && WORLD_FLAGS+=(--describe-first) FIRST_FLAG=true
[[ "$LOOKUP" == 1 ]] && WORLD_FLAGS+=(--lookup-rows 20000)
# A world folder made with other settings, or before the listings existed, is made again.
# made_with DIR DISTANCE: DIR's world was made with --max-distance DISTANCE.
made_with() { grep -Eq "\"max_distance\": *$2(\.0)?," "$1/manifest.json"; }
# first_rows N SRC DST: the first N rows of SRC, written to DST whole or not at all.
first_rows() { head -n "$1" "$2" > "$3.tmp" && mv "$3.tmp" "$3"; }
# has_setting KEY VALUE: the training world's manifest says KEY is VALUE (false when absent: a
# world made before the setting existed).
has_setting() {
  local m="$OUT/world/manifest.json"
  if grep -q "\"$1\"" "$m"; then grep -Eq "\"$1\": *$2" "$m"; else [[ "$2" == false ]]; fi
}
world_ok() {
  [[ -f "$OUT/world/manifest.json" && -f "$OUT/world/$DESCRIPTIONS" && -f "$OUT/world/$LISTINGS" ]] &&
    has_setting listing_thoughts "$LISTING_THOUGHTS" &&
    has_setting description_thoughts "$DESCRIPTION_FLAG" && has_setting option_text_answers "$TEXT_FLAG" &&
    has_setting relation_reasons "$RELATION_FLAG" && has_setting verdict_first "$VERDICT_FLAG" &&
    has_setting target_first "$TARGET_FLAG" && has_setting given_descriptions "$GIVEN_FLAG" &&
    has_setting describe_first "$FIRST_FLAG" &&
    made_with "$OUT/world" "$MAX_DISTANCE" &&
    { [[ "$LOOKUP" != 1 ]] || [[ -f "$OUT/world/sft_lookup.jsonl" ]]; } &&
    { [[ "$TEXT_ANSWERS" != 1 ]] || [[ -f "$OUT/world/sft_restate.jsonl" ]]; } &&
    { [[ "$DESCRIPTION_LOOKUPS" != 1 ]] || [[ -f "$OUT/world/sft_description_lookups.jsonl" ]]; }
}
world_ok || "$BIN" world --seed 1 --scenes "$SCENES" --chains "$CHAINS" "${WORLD_FLAGS[@]}" \
  --max-distance "$MAX_DISTANCE" --out "$OUT/world" > /dev/null
[[ -f "$OUT/heldout/manifest.json" ]] && made_with "$OUT/heldout" "$MAX_DISTANCE" ||
  "$BIN" world --seed 424242 --scenes "$EVAL_SCENES" --max-distance "$MAX_DISTANCE" \
    --out "$OUT/heldout" > /dev/null
stamp "worlds: $SCENES training scenes, $EVAL_SCENES held-out scenes"
[[ -f "$OUT/tokenizer/tokenizer.json" ]] || "$BIN" train tokenizer --data "$OUT/world" --vocab-size 2048 --out "$OUT/tokenizer" > /dev/null
[[ -f "$OUT/base/ema.safetensors" ]] || "$BIN" init --preset default --tokenizer "$OUT/tokenizer" --out "$OUT/base" > /dev/null
stamp "tokenizer and base model"

W="$OUT/world"
STAGE1=("$W/stage1_depth.jsonl" "$W/stage1_seg.jsonl")
AE_SET=(--set optim.lr=1e-3 --set optim.warmup_steps=50 --set ae.batch_size=4 --set ae.crop_size=64)
AMG_SET=(--set optim.lr=1e-3 --set optim.warmup_steps=50 --set data.expected_num_tokens=1024
  --set data.max_depth=20.0 --set run.save_every=250)
# REHEARSE_GEN=1: the stage-1 rows join every later SFT-kind stage's data, with amg's depth range
# and flips (flips touch only the stage-1 rows).
# REHEARSE_GEN=sft: only the main SFT rehearses them (the stages before it train text alone).
REHEARSAL=() SFT_REHEARSAL=()
REHEARSE_SET=(--set sft.rehearse_generation=true --set data.max_depth=20.0 --set data.flip_prob=0.5)
case "$REHEARSE_GEN" in
  0) ;;
  1) REHEARSAL=("${STAGE1[@]}") SFT_SET+=("${REHEARSE_SET[@]}") ;;
  sft) SFT_REHEARSAL=("${STAGE1[@]}") ;;
  *) echo "REHEARSE_GEN must be 0, 1 or sft, not '$REHEARSE_GEN'" >&2; exit 2 ;;
esac
if [[ "$GROUNDED" == 1 ]]; then
  # ae and vit train separate parts of the base model: side by side, one thread each.
  ( export RAYON_NUM_THREADS=1
    stage vit vit --model "$OUT/base" --data "${STAGE1[@]}" --steps "$VIT_STEPS" \
      --set optim.lr=1e-3 --set data.max_depth=20.0 --set data.flip_prob=0.5 \
      --set vit.class_balance=0.5 --set vit.color_weight="$VIT_COLOR" ) > "$OUT/vit.log" 2>&1 &
  vit_pid=$!
  RAYON_NUM_THREADS=1 stage ae ae --model "$OUT/base" --data "${STAGE1[@]}" --steps "$AE_STEPS" "${AE_SET[@]}"
  wait "$vit_pid" || { echo "vit failed: see $OUT/vit.log" >&2; exit 1; }
  stamp "vit"
  SFT_SET+=(--set sft.omit_system_prompt=true --set freeze.vit=true)
  stage amg amg --model "$OUT/ae/model" --init-from "$OUT/vit/model" --data "${STAGE1[@]}" \
    --steps "$AMG_STEPS" "${AMG_SET[@]}" --set freeze.vit=true
  stage ground sft --model "$OUT/ae/model" --init-from "$OUT/amg/model" --data "$W/$LISTINGS" "${REHEARSAL[@]}" \
    --steps "$GROUND_STEPS" "${SFT_SET[@]}"
  SFT_FROM="$OUT/ground/model" SFT_DATA=("$W/$LISTINGS")
  # PERCEIVE=1: scenes of few, near objects, described, before the full scenes' chains.
  if [[ "$PERCEIVE" == 1 ]]; then
    for n in $PERCEIVE_OBJECTS; do
      P="$OUT/perceive-world-$n"
      [[ -f "$P/manifest.json" ]] && grep -Eq "\"scenes\": *$PERCEIVE_SCENES," "$P/manifest.json" &&
        made_with "$P" "$PERCEIVE_DISTANCE" ||
        "$BIN" world --seed $((100 + n)) --scenes "$PERCEIVE_SCENES" --min-objects "$n" \
          --max-objects "$n" --max-distance "$PERCEIVE_DISTANCE" --questions 1 --out "$P" > /dev/null
      if (( PERCEIVE_STEPS > 0 )); then
        stage "perceive-$n" sft --model "$OUT/ae/model" --init-from "$SFT_FROM" \
          --data "$P/$DESCRIPTIONS" "${REHEARSAL[@]}" --steps "$PERCEIVE_STEPS" "${SFT_SET[@]}"
        SFT_FROM="$OUT/perceive-$n/model"
      fi
      first_rows "$PERCEIVE_MIX" "$P/$DESCRIPTIONS" "$P/perceive_mix.jsonl"
      SFT_DATA+=("$P/perceive_mix.jsonl")
    done
  fi
else
  stage ae ae --model "$OUT/base" --data "${STAGE1[@]}" --steps "$AE_STEPS" "${AE_SET[@]}"
  stage amg amg --model "$OUT/ae/model" --data "${STAGE1[@]}" --steps "$AMG_STEPS" \
    "${AMG_SET[@]}" --set freeze.vit=false
  SFT_FROM="$OUT/amg/model" SFT_DATA=()
fi
# LOOKUP=1: the lookup curriculum, with the settings it was measured with, between stage 1 (and
# grounding) and SFT; SFT rehearses it on the first LOOKUP_MIX lookups.
if [[ "$LOOKUP" == 1 ]]; then
  LOOKUP_SET=("${SFT_SET[@]}" --set sft.omit_system_prompt=true --set freeze.vit=true)
  stage lookup-two sft --model "$OUT/ae/model" --init-from "$SFT_FROM" \
    --data "$W/sft_lookup_two.jsonl" "${REHEARSAL[@]}" --steps "$LOOKUP_STEPS" "${LOOKUP_SET[@]}"
  stage lookup sft --model "$OUT/ae/model" --init-from "$OUT/lookup-two/model" \
    --data "$W/sft_lookup.jsonl" "${REHEARSAL[@]}" --steps "$LOOKUP_STEPS" "${LOOKUP_SET[@]}"
  first_rows "$LOOKUP_MIX" "$W/sft_lookup.jsonl" "$W/sft_lookup_mix.jsonl"
  SFT_FROM="$OUT/lookup/model" SFT_DATA+=("$W/sft_lookup_mix.jsonl")
fi
# TEXT_ANSWERS=1: the options' restatement alone, on short text rows, right before SFT.
if [[ "$TEXT_ANSWERS" == 1 ]] && (( RESTATE_STEPS > 0 )); then
  stage restate sft --model "$OUT/ae/model" --init-from "$SFT_FROM" \
    --data "$W/sft_restate.jsonl" "${REHEARSAL[@]}" --steps "$RESTATE_STEPS" "${SFT_SET[@]}"
  SFT_FROM="$OUT/restate/model" SFT_DATA+=("$W/sft_restate.jsonl")
fi
# DESCRIPTION_LOOKUPS=1: reading answers off the description, on text rows, right before SFT.
if [[ "$DESCRIPTION_LOOKUPS" == 1 ]]; then
  if (( DESCRIPTION_LOOKUP_STEPS > 0 )); then
    stage read sft --model "$OUT/ae/model" --init-from "$SFT_FROM" \
      --data "$W/sft_description_lookups.jsonl" "${REHEARSAL[@]}" --steps "$DESCRIPTION_LOOKUP_STEPS" "${SFT_SET[@]}"
    SFT_FROM="$OUT/read/model"
  fi
  first_rows "$DESCRIPTION_LOOKUP_MIX" "$W/sft_description_lookups.jsonl" "$W/sft_description_lookups_mix.jsonl"
  SFT_DATA+=("$W/sft_description_lookups_mix.jsonl")
fi
MAIN_SFT_SET=("${SFT_SET[@]}")
[[ "$SFT_TRAIN_VIT" == 1 ]] && MAIN_SFT_SET+=(--set freeze.vit=false)
[[ "$REHEARSE_GEN" == sft ]] && MAIN_SFT_SET+=("${REHEARSE_SET[@]}")
[[ "$DESCRIBE_FIRST" == 1 ]] && MAIN_SFT_SET+=(--set sft.describe_first=true)
MAIN_DESCRIPTIONS=("$W/$DESCRIPTIONS")
if (( DESCRIBE_REPEATS > 1 )); then
  MAIN_DESCRIPTIONS=("$W/sft_describe_x$DESCRIBE_REPEATS.jsonl")
  # Made again whenever the world's descriptions are newer (a world made again).
  [[ "${MAIN_DESCRIPTIONS[0]}" -nt "$W/$DESCRIPTIONS" ]] || {
    for _ in $(seq "$DESCRIBE_REPEATS"); do cat "$W/$DESCRIPTIONS"; done > "${MAIN_DESCRIPTIONS[0]}.tmp" &&
      mv "${MAIN_DESCRIPTIONS[0]}.tmp" "${MAIN_DESCRIPTIONS[0]}"
  }
fi
stage sft sft --model "$OUT/ae/model" --init-from "$SFT_FROM" \
  --data "$W/sft_interleaved.jsonl" "${MAIN_DESCRIPTIONS[@]}" "${SFT_DATA[@]}" "${REHEARSAL[@]}" "${SFT_REHEARSAL[@]}" \
  --steps "$SFT_STEPS" "${MAIN_SFT_SET[@]}"
stage grpo grpo --model "$OUT/ae/model" --init-from "$OUT/sft/model" --data "$W/rl.jsonl" \
  --steps "$GRPO_STEPS" "${GRPO_SET[@]}"
[[ "${NO_EVAL:-0}" == 1 ]] && exit 0
limit=(--limit "$EVAL_LIMIT")
[[ "${QUICK:-0}" == 1 ]] && limit=(--limit 6)
"$BIN" eval --model "$OUT/grpo/model" --bench "$OUT/heldout/eval.tsv" --mode cooper --out "$OUT/eval" \
  "${EVAL_SET[@]}" "${limit[@]}" | tail -n 20
stamp "evaluation"
