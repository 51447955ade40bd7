"""Pure loss functions of tensors (shapes in each docstring). The training step weights and logs them."""

from alignx.objectives.contrastive import info_nce
from alignx.objectives.language_matching import LanguageMatchingHead, language_matching_loss
from alignx.objectives.ntp import IGNORE_INDEX, fused_next_token_loss, next_token_loss_from_logits

__all__ = [
    "IGNORE_INDEX",
    "LanguageMatchingHead",
    "fused_next_token_loss",
    "info_nce",
    "language_matching_loss",
    "next_token_loss_from_logits",
]
