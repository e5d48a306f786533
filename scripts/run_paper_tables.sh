#!/usr/bin/env bash
# The papers' localisation and pixel-removal tables on Fashion-MNIST with the shipped weights
# (src/alignnet/weights/), as recorded in benchmarks/RESULTS.md. Needs the full Fashion-MNIST test set
# (apt-get install dataset-fashion-mnist). Stages run in order of importance; each writes its own directory
# under OUT (JSON summaries, .npz arrays, figures); `python scripts/paper_figures.py OUT` then draws the
# combined figures. Usage: bash scripts/run_paper_tables.sh [OUT] [STAGE ...]
#
# What is reduced on a 2-core CPU, and why (the full protocol needs a GPU for the perturbation methods):
#   - pixel removal: `ours` runs the full protocol (1,024 images, 128 steps, both orders); the other methods
#     use 16 steps (the value after 25% removed is the same point of the curve) and the perturbation methods
#     (IG, occlusion, RISE) 256 images, LIME 128;
#   - localisation: 500 grids of 3x3 for ours/grad/ixg/gradcam; 10 grids (90 maps of 96x96) for the
#     perturbation methods, whose cost per map is 2,000 (occlusion) to 4,500 (LIME) forward passes.
set -euo pipefail
OUT=${1:-runs/paper_tables}
shift || true
STAGES=${*:-"loc_fast pr_ours pr_fast pr_slow loc_slow"}
PY=${PYTHON:-python}
W=src/alignnet/weights
BCOS="--model $W/fmnist_bcos.safetensors"
CODA="--model $W/fmnist_coda.safetensors"
ev() { "$PY" -m alignnet.cli evaluate --data fmnist --quiet "$@"; }
for stage in $STAGES; do
  case $stage in
    loc_fast)  # 500 grids, both models
      ev $CODA --metric localisation --methods ours,grad,ixg,gradcam --out "$OUT/loc_coda"
      ev $BCOS --metric localisation --methods ours,grad,ixg,gradcam --out "$OUT/loc_bcos" ;;
    pr_ours)  # the full protocol
      ev $CODA --metric pixel-removal --methods ours --out "$OUT/pr_ours_coda"
      ev $BCOS --metric pixel-removal --methods ours --out "$OUT/pr_ours_bcos" ;;
    pr_fast)
      for m in coda bcos; do
        ev --model "$W/fmnist_$m.safetensors" --metric pixel-removal --methods ours,grad,ixg,gradcam --steps 16 \
          --out "$OUT/pr_fast_$m"
      done ;;
    pr_slow)
      for m in coda bcos; do
        ev --model "$W/fmnist_$m.safetensors" --metric pixel-removal --methods intgrad,occlusion9,occlusion5,rise \
          --steps 16 --n-images 256 --out "$OUT/pr_slow_$m"
        ev --model "$W/fmnist_$m.safetensors" --metric pixel-removal --methods lime --steps 16 --n-images 128 \
          --out "$OUT/pr_lime_$m"
      done ;;
    loc_slow)
      for m in coda bcos; do
        ev --model "$W/fmnist_$m.safetensors" --metric localisation --n-grids 10 \
          --methods ours,rise,intgrad,occlusion9,occlusion5 --out "$OUT/loc_slow_$m"
      done ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
