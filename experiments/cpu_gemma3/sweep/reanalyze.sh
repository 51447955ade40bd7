#!/usr/bin/env bash
# Re-run the sweep's analyses with per-pair MEXA outcomes (needed for paired-bootstrap CIs; the first arms ran
# before analysis.json carried them), then compare every arm with CPT. Needs the arms' stage1/final models.
set -euo pipefail
runs=experiments/cpu_gemma3/sweep/runs
for arm in "$runs"/*/; do
  arm=$(basename "$arm")
  model=$runs/$arm/stage1/final
  [ -d "$model" ] || model=packaged:gemma3-270m
  alignx analyze --config experiments/cpu_gemma3/sweep/analyze.yaml model.name_or_path=$model \
    output_dir=$runs/$arm run_name=$arm
done
alignx compare --config experiments/cpu_gemma3/sweep/compare.yaml runs_dir=$runs
