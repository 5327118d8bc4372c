# Shared by scripts/train-default.sh and scripts/ablation.sh (sourced, not run): the cooper binary,
# the SFT, GRPO and evaluation settings of the default recipe, and the stage runner. The ablation's
# rows use exactly these settings, so that they differ from the default model only in what the row
# names.
SFT_STEPS=${SFT_STEPS:-1500}
GRPO_STEPS=${GRPO_STEPS:-8}
# SFT feeds pictures as inference does (maps ViT-only, not the official VAE + ViT): with the official
# layout the default model's turns after a generated map were incoherent (docs/results.md).
# The ViT is trained too: the official recipe freezes it because BAGEL's SigLIP is pretrained, but
# the default model's ViT starts random, and frozen it would stay a random projection of the patches
# (docs/training.md).
# Every SFT also learns the world's scene descriptions, next to its chains (docs/training.md).
DESCRIPTIONS=sft_describe.jsonl
# The world's cell listings, learnt by GROUNDED=1 runs of scripts/train-default.sh.
LISTINGS=sft_cells.jsonl
SFT_SET=(--set optim.lr=1e-3 --set optim.warmup_steps=50 --set data.expected_num_tokens=2048
  --set run.save_every=250 --set sft.match_inference_context=true --set freeze.vit=false)
GRPO_SET=(--set optim.lr=5e-5 --set optim.grad_accum_steps=16 --set grpo.num_generations=8
  --set grpo.max_think_tokens=256 --set grpo.flow_steps=10 --set run.save_every=5)
EVAL_SET=(--max-think-tokens 256 --flow-steps 10 --no-progress)
# CONSTRAIN_ANSWERS=1: every evaluation boxes only the questions' options (`cooper eval
# --constrain-answers`; docs/results.md, "Constrained answers"). Off by default, as officially.
if [[ "${CONSTRAIN_ANSWERS:-0}" == 1 ]]; then EVAL_SET+=(--constrain-answers); fi

# COOPER_BIN: a cooper binary to use instead of building one (e.g. a copy, so that rebuilding the
# tree during a long run does not change the binary under it).
if [[ -n "${COOPER_BIN:-}" ]]; then
  BIN=$COOPER_BIN
else
  cargo build --release -q -p cooper-cli
  BIN=target/release/cooper
fi
SECONDS=0
stamp() { echo "[$(printf '%5d' "$SECONDS") s] $*"; }

# stage DIR KIND ARGS...: `cooper train KIND --out $OUT/DIR ARGS...` unless DIR already holds its
# model; a partial run is resumed from its last checkpoint.
stage() {
  local dir=$1 kind=$2; shift 2
  if [[ -f "$OUT/$dir/model/llm_config.json" ]]; then stamp "$dir: done before"; return; fi
  local resume=()
  [[ -d "$OUT/$dir" ]] && resume=(--resume)
  "$BIN" train "$kind" --out "$OUT/$dir" "${resume[@]}" "$@"
  stamp "$dir"
}
