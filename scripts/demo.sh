#!/usr/bin/env bash
# The main job on a machine with nothing but the Rust toolchain: build, render a few scenes of the
# synthetic world, write a model folder, ask it a spatial question about one scene (trace folder with
# index.html), produce its depth and segmentation maps, and check the model code against the
# official reference outputs.
#
# Until the trained default model lands (issue 6), the model is the randomly initialised `tiny`
# preset: the chain's mechanics are real, its text is not meaningful.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/demo}
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p cooper-cli
cooper=target/release/cooper

$cooper world --seed 7 --scenes 4 --out "$out/world"
$cooper init --preset tiny --out "$out/model"
image="$out/world/images/$(ls "$out/world/images" | head -n 1)"
question=$(head -n 1 "$out/world/questions.jsonl" | sed -e 's/.*"text":"\([^"]*\)".*/\1/')
$cooper ask --model "$out/model" --image "$image" --max-tokens 64 --steps 10 --out "$out/trace" "$question"
$cooper depth --model "$out/model" --image "$image" -o "$out/depth.png" --steps 10
$cooper segment --model "$out/model" --image "$image" -o "$out/segmentation.png" --steps 10
$cooper parity tests/fixtures/bagel-tiny
echo "open $out/trace/index.html to see the reasoning chain"
