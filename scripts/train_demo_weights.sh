#!/usr/bin/env bash
# Train the shipped Fashion-MNIST demo models and the plain-CNN baseline (CPU, shortened schedule),
# then copy the two explainable ones into the package. Usage: bash scripts/train_demo_weights.sh [RUNS_DIR]
# Needs the full Fashion-MNIST (apt-get install dataset-fashion-mnist). The three runs go in parallel,
# one CPU thread each (fastest on a small, busy CPU); results: RUNS_DIR/*/summary.json.
set -euo pipefail
RUNS=${1:-runs/demo}
PY=${PYTHON:-python}
mkdir -p "$RUNS"
for preset in fmnist-bcos fmnist-coda fmnist-cnn; do  # all 60,000 training images, see the presets
  "$PY" -m alignnet train --preset "$preset" --set trainer.num_threads=1 --no-progress \
    --output "$RUNS/$preset" --overwrite > "$RUNS/$preset.log" 2>&1 &
done
wait
mkdir -p src/alignnet/weights
cp "$RUNS/fmnist-bcos/model.safetensors" src/alignnet/weights/fmnist_bcos.safetensors
cp "$RUNS/fmnist-coda/model.safetensors" src/alignnet/weights/fmnist_coda.safetensors
grep -h '"val_acc"\|"wall_time_s"\|"epochs"' "$RUNS"/*/summary.json
