#!/usr/bin/env bash
# Rebuild the demo data set shipped in src/alignx/assets/demo/ (needs the Debian LibreOffice help packages).
#   apt-get install --no-install-recommends libreoffice-help-en-us libreoffice-help-{de,fr,es,ru,zh-cn,ja,ko,hi}
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=src python -m alignx.data.build \
  out_dir=src/alignx/assets/demo \
  sources=libreoffice_help \
  languages=de,fr,es,ru,zh,ja,ko,hi \
  heldout_per_lang=50 max_pairs_per_lang=200 \
  min_src_words=4 max_src_words=25 max_chars=200 \
  instructions_per_lang=40 howto_per_lang=8 \
  train_file=parallel_train.jsonl heldout_file=parallel_heldout.jsonl \
  "$@"
