#!/usr/bin/env bash
# A tour on a machine with nothing but the Rust toolchain: build, ask the embedded default model a
# spatial question about an example scene (trace folder with index.html), produce its depth and
# segmentation maps, render a few scenes of the synthetic world, and check the model code against
# the official reference outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/demo}
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p cooper-cli
cooper=target/release/cooper

image=examples/scene-1.png
$cooper ask --image "$image" --steps 10 --out "$out/trace" "$(cat examples/scene-1.txt)"
$cooper depth --image "$image" -o "$out/depth.png" --steps 20
$cooper segment --image "$image" -o "$out/segmentation.png" --steps 20
$cooper world --seed 7 --scenes 4 --out "$out/world"
$cooper parity tests/fixtures/bagel-tiny
echo "open $out/trace/index.html to see the reasoning chain"
