#!/usr/bin/env bash
# The open rows of the Fashion-MNIST tables (issue 15), run with the sharded evaluation on both cores
# (--processes 2, one thread each), in rounds of growing size: a round reuses the shard files of the earlier ones
# (grid k and image k do not depend on --n-grids / --n-images), so the run can be stopped after any round and each
# finished round is a complete result (copied to <dir>_n<count>).
# Usage: bash scripts/run_sharded_tables.sh [OUT] [ROUND ...]   e.g. ROUND = "loc rise 16" or "pr lime 128 coda bcosified"
# (a round's models are fmnist_<name> for every name after the count; default: bcos coda)
# PROCESSES=N (default 2) sets the number of worker processes (one thread each; OMP_NUM_THREADS=k for k).
set -euo pipefail
OUT=${1:-runs/sharded}
shift || true
PY=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # one torch thread per worker process
# --force: a round grows the previous round's result in the same folder (its shards are reused)
ev() { "$PY" -m alignnet evaluate --data fmnist --processes "${PROCESSES:-2}" --quiet --force "$@"; }
keep() { mkdir -p "$1_n$2" && cp "$1"/*.json "$1"/*.npz "$1_n$2/"; }
loc() {  # localisation of method $1 on the first $2 grids (2 grids per step and per shard), models ${3:-bcos coda}
  for m in ${3:-bcos coda}; do
    ev --model fmnist_$m --metric localisation --grid 3 --n-grids "$2" --methods "$1" --batch-size 18 \
      --shard-size 2 --out "$OUT/loc_${1}_$m"
    keep "$OUT/loc_${1}_$m" "$2"
  done
}
pr() {  # pixel removal of method $1 on the first $2 images, 16 steps, models ${3:-bcos coda}
  for m in ${3:-bcos coda}; do
    ev --model fmnist_$m --metric pixel-removal --methods "$1" --n-images "$2" --steps 16 --batch-size 32 \
      --shard-size 32 --out "$OUT/pr_${1}_$m"
    keep "$OUT/pr_${1}_$m" "$2"
  done
}
ROUNDS=("$@")
if [ ${#ROUNDS[@]} -eq 0 ]; then
  ROUNDS=("loc rise 8 coda" "loc intgrad 8" "loc occlusion9 4" "loc rise 16" "loc intgrad 16" "loc occlusion9 8"
    "loc rise 32" "loc intgrad 32" "loc occlusion9 16" "loc rise 50" "loc intgrad 50" "loc occlusion9 50")
fi
for r in "${ROUNDS[@]}"; do
  # shellcheck disable=SC2086
  set -- $r
  models="${*:4}"
  "$1" "$2" "$3" "${models:-bcos coda}"
done
