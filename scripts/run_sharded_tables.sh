#!/usr/bin/env bash
# The open rows of the Fashion-MNIST tables (issue 15), run with the sharded evaluation on both cores
# (--processes 2, one thread each), in rounds of growing size: every round reuses the shard files of the previous
# one (grid k and image k do not depend on --n-grids / --n-images), so the run can be stopped after any round and
# each finished round is a complete result (copied to <dir>_n<count>).
# Usage: bash scripts/run_sharded_tables.sh [OUT]
set -euo pipefail
OUT=${1:-runs/sharded}
PY=${PYTHON:-python}
ev() { "$PY" -m alignnet evaluate --data fmnist --processes 2 --quiet "$@"; }
keep() { mkdir -p "$1_n$2" && cp "$1"/*.json "$1"/*.npz "$1_n$2/"; }
loc() {  # localisation of the perturbation methods on the first $1 grids
  for m in bcos coda; do
    ev --model fmnist_$m --metric localisation --grid 3 --n-grids "$1" --methods rise,intgrad,occlusion9 \
      --shard-size 4 --out "$OUT/loc_$m"
    keep "$OUT/loc_$m" "$1"
  done
}
pr() {  # pixel removal of the methods that had fewer than 1,024 images, on the first $1 images
  for m in bcos coda; do
    ev --model fmnist_$m --metric pixel-removal --methods "$2" --n-images "$1" --steps 16 \
      --batch-size 32 --shard-size 32 --out "$OUT/pr_$m"
    keep "$OUT/pr_$m" "$1"
  done
}
SLOW=occlusion9,occlusion5,intgrad,rise,lime
loc 8
pr 64 "$SLOW"
loc 16
pr 128 "$SLOW"
loc 32
pr 256 "$SLOW,ours,grad,ixg,deeplift,gradcam"
loc 50
loc 100
