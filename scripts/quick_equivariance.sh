#!/usr/bin/env bash
# The quick_equivariance preset (conf/experiment/quick_equivariance.yaml): six multiruns into
# results/runs/quick_equivariance, the deep-ensemble evaluation, the report
# results/equivariance/report.md with a copy of its records in results/equivariance/records, and
# the raw-vs-band-limited input check of the CNNs (results/equivariance/soft_inputs.md).
# Extra Hydra overrides go to every multirun (or: make sweep PRESET=quick_equivariance SWEEP_ARGS=...):
#   scripts/quick_equivariance.sh                              # the preset
#   scripts/quick_equivariance.sh hydra.launcher.n_jobs=1      # one job at a time
# Jobs already complete in results/runs are skipped, so an interrupted run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-results/runs}
OUT=${OUT:-results/equivariance}
train() { "$PY" -m sphere_bench.train -m experiment=quick_equivariance "results_dir=$RUNS" "$@"; }
start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
train model=s2cnn_cls_small_aa,s2cnn_cls_small "$@"
train model=fa_cnn_cls_quick_115k "$@"
train model=cnn_cls_quick_115k data.rotate_train=none,random "$@"
# Soft equivariance on the band-limited CNN: the penalty weight λ at 6 epochs (3 network passes
# per sample and step: CE on x, penalty on P_B x and R P_B x), and λ = 0 at 6 epochs and at
# 18 epochs (the penalty runs' number of forward+backward sample passes: equal training cost).
train model=bl_cnn_cls_quick_115k data.rotate_train=none,random trainer.max_epochs=6,18 callbacks.early_stopping.patience=18 "$@"
train model=bl_cnn_cls_quick_115k data.rotate_train=none,random +lit.equivariance_weight=0.1,1,10,100 "$@"
train model=cnn_cls_small data.rotate_train=none,random seed=0,1,2,3,4,5,6,7 "$@"
"$PY" -m sphere_bench.evaluate.ensemble --runs "$RUNS" --sweeps quick_equivariance --out "$OUT"
end=$(date +%s)
# The records the report used (one per config) are copied beside it, not into results/records:
# the default report reads that folder and stays the quick preset's.
"$PY" scripts/equivariance_report.py --runs "$RUNS" --out "$OUT" --wall-seconds $((end - start)) \
  --load "1/5/15-min load average at start ${load_start}, at end $(cut -d' ' -f1-3 /proc/loadavg)" \
  --copy-records "$OUT/records"
"$PY" scripts/soft_equivariance_inputs.py --runs "$RUNS" --out "$OUT/soft_inputs.md"
