"""alignx: AlignX multilingual representation alignment for Hugging Face causal LMs."""

__version__ = "0.1.0"
