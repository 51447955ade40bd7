"""lm-eval task YAMLs for local benchmark files (see ``alignx.eval.benchmarks``) and their helpers."""
