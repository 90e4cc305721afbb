#!/usr/bin/env bash
# The quick_equivariance preset (conf/experiment/quick_equivariance.yaml): five multiruns into
# results/runs/quick_equivariance, the deep-ensemble evaluation, the report
# results/equivariance/report.md and a copy of the records in results/equivariance/records.
# Extra Hydra overrides go to every multirun (or: make sweep_equivariance SWEEP_ARGS=...):
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
train model=s2cnn_cls_small_aa,s2cnn_cls_small "$@"
train model=fa_cnn_cls_quick_115k "$@"
train model=cnn_cls_quick_115k +lit.equivariance_weight=0.1,1.0 "$@"
train model=cnn_cls_quick_115k data.rotate_train=none,random "$@"
train model=cnn_cls_small data.rotate_train=none,random seed=0,1,2,3,4,5,6,7 "$@"
"$PY" -m sphere_bench.evaluate.ensemble --runs "$RUNS" --sweeps quick_equivariance --out "$OUT"
end=$(date +%s)
"$PY" scripts/equivariance_report.py --runs "$RUNS" --out "$OUT" --wall-seconds $((end - start))
# Snapshot of the records beside the report (not in results/records: the default report reads
# that folder and stays the quick preset's).
mkdir -p "$OUT/records" && rm -f "$OUT"/records/*.json && cp "$RUNS"/quick_equivariance/*.json "$OUT/records/"
