#!/usr/bin/env bash
# Evaluate the ablation checkpoints of scripts/train_ablations.sh (localisation: 500 grids of 3x3 with `ours`;
# pixel removal: 1,024 images, both orders, 16 steps, with `ours`) and draw metric-vs-T and metric-vs-b.
# T=1000 is the shipped CoDA model. Usage: bash scripts/run_ablation_tables.sh RUNS_DIR [OUT] [STAGE ...]
# Stages: T_loc b_loc T_pr b_pr (default: all). Localisation results are cached in OUT, so a stage can be rerun.
set -euo pipefail
RUNS=$1
OUT=${2:-runs/ablation_tables}
shift 2 || shift $#
STAGES=${*:-"T_loc b_loc T_pr b_pr"}
PY=${PYTHON:-python}
ev() { "$PY" -m alignnet evaluate --data fmnist --quiet --methods ours "$@"; }
# every run directory names its model model.safetensors: copy them to distinct names, since result files are
# named after the model file
mkdir -p "$OUT/models"
for d in coda_t10 coda_t100 bcos_b1.0 bcos_b1.5 bcos_b2.0 bcos_b2.5; do
  [ -f "$RUNS/$d/model.safetensors" ] && cp "$RUNS/$d/model.safetensors" "$OUT/models/$d.safetensors"
done
cp src/alignnet/weights/fmnist_coda.safetensors "$OUT/models/coda_t1000.safetensors"
T_MODELS=""; for d in coda_t10 coda_t100 coda_t1000; do T_MODELS="$T_MODELS --model $OUT/models/$d.safetensors"; done
B_MODELS=""; for d in bcos_b1.0 bcos_b1.5 bcos_b2.0 bcos_b2.5; do B_MODELS="$B_MODELS --model $OUT/models/$d.safetensors"; done
for stage in $STAGES; do
  case $stage in
    T_loc) ev $T_MODELS --ablation temperature --metric localisation --out "$OUT/T_localisation" ;;
    b_loc) ev $B_MODELS --ablation b --metric localisation --out "$OUT/b_localisation" ;;
    T_pr) ev $T_MODELS --ablation temperature --metric pixel-removal --steps 16 --out "$OUT/T_pixel_removal" ;;
    b_pr) ev $B_MODELS --ablation b --metric pixel-removal --steps 16 --out "$OUT/b_pixel_removal" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
