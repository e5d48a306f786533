#!/usr/bin/env bash
# Train the Fashion-MNIST checkpoints of the papers' two ablations (CPU, shortened schedules):
#   CoDA temperature T in {10, 100}: the `fmnist-coda` preset (4 epochs, all 60,000 images) with only T changed;
#     T=1000 is the shipped src/alignnet/weights/fmnist_coda.safetensors, trained with the same preset.
#   B-cos b in {1, 1.5, 2, 2.5}: the `fmnist-bcos` preset with the paper's per-b layer scale and logit temperature
#     (model.paper_ablation=true, docs/models.md#b-ablation), 2 epochs over all 60,000 images.
# Two queues run in parallel, one CPU thread per run. Usage: bash scripts/train_ablations.sh [RUNS_DIR]
# Then: alignnet evaluate --ablation temperature|b --model RUNS_DIR/.../model.safetensors ... (see benchmarks/RESULTS.md).
set -euo pipefail
RUNS=${1:-runs/ablations}
PY=${PYTHON:-python}
mkdir -p "$RUNS"
train() {  # NAME PRESET [--set ...]
  local name=$1 preset=$2
  shift 2
  "$PY" -m alignnet train --preset "$preset" --set trainer.num_threads=1 --no-progress "$@" \
    --output "$RUNS/$name" --overwrite > "$RUNS/$name.log" 2>&1
}
(
  train coda_t10 fmnist-coda --set model.args.temperature=10.0
  train coda_t100 fmnist-coda --set model.args.temperature=100.0
) &
(
  for b in 1.0 1.5 2.0 2.5; do
    train "bcos_b$b" fmnist-bcos --set model.paper_ablation=true --set model.args.b=$b --epochs 2
  done
) &
wait
grep -H '"val_acc"\|"wall_time_s"' "$RUNS"/*/summary.json
