#!/usr/bin/env bash
# The papers' localisation and pixel-removal tables on Fashion-MNIST with the shipped weights
# (src/alignnet/weights/), as recorded in benchmarks/RESULTS.md. Needs the full Fashion-MNIST test set
# (apt-get install dataset-fashion-mnist). Stages run in order of importance; each writes its own directory
# under OUT (JSON summaries, .npz arrays, figures); `python scripts/paper_figures.py OUT` then draws the
# combined figures and prints the tables. Usage: bash scripts/run_paper_tables.sh [OUT] [STAGE ...]
#
# Reduced for a 2-core CPU (the full protocol for the perturbation methods needs a GPU), as RESULTS.md says:
#   - pixel removal: `ours` runs the full protocol (1,024 images, 128 steps, both orders); grad/ixg/gradcam
#     1,024 images at 16 steps (the value after 25% removed is the same point of the curve); occlusion and
#     IG 128 images, RISE and LIME 64;
#   - localisation: 500 grids of 3x3 for ours/grad/ixg/gradcam; 3 grids (27 maps of 96x96) for occlusion-9,
#     IG and RISE, whose cost per grid is ~2,000 (occlusion) forward passes of a 96x96 image.
# Set OMP_NUM_THREADS=1 and run stages in parallel on a small CPU. On a GPU, drop --steps, --n-images and --n-grids
# (their defaults are the full protocol: 128 steps, 1,024 images, 500 grids).
set -euo pipefail
OUT=${1:-runs/paper_tables}
shift || true
STAGES=${*:-"loc_fast pr_ours pr_fast pr_slow loc_slow"}
PY=${PYTHON:-python}
W=src/alignnet/weights
ev() { "$PY" -m alignnet evaluate --data fmnist --quiet "$@"; }
for stage in $STAGES; do
  for m in coda bcos; do
    model="--model $W/fmnist_$m.safetensors"
    case $stage in
      loc_fast) ev $model --metric localisation --methods ours,grad,ixg,gradcam --out "$OUT/loc_$m" ;;
      pr_ours) ev $model --metric pixel-removal --methods ours --out "$OUT/pr_ours_$m" ;;
      pr_fast) ev $model --metric pixel-removal --methods grad,ixg,gradcam --steps 16 --out "$OUT/pr_fast_$m" ;;
      pr_slow)
        ev $model --metric pixel-removal --methods occlusion9,occlusion5,intgrad --steps 16 --n-images 128 \
          --out "$OUT/pr_slow_$m"
        ev $model --metric pixel-removal --methods rise,lime --steps 16 --n-images 64 --out "$OUT/pr_rise_lime_$m" ;;
      loc_slow) ev $model --metric localisation --n-grids 3 --methods ours,occlusion9,intgrad,rise --out "$OUT/loc_slow_$m" ;;
      *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
  done
done
