"""Language feature integration (L_LAM): a small classifier tells whether two sentences share a language."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LanguageMatchingHead(nn.Module):
    """2-layer gated MLP on [s_i ; s_j] (2H -> width -> 2, no bias), as in the reference.

    logits = down(silu(gate(z)) * up(z)), z = [s_i ; s_j]. It is trained with the model and
    discarded at inference. Weights stay fp32 whatever the model dtype. ``init_std`` > 0 draws the
    weights from N(0, init_std) as HF initialises linear layers (reference 0.02); 0 keeps PyTorch's
    default (Kaiming-uniform).
    """

    def __init__(self, hidden_size: int, width: int = 128, init_std: float = 0.02) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.width = width
        self.gate = nn.Linear(2 * hidden_size, width, bias=False)
        self.up = nn.Linear(2 * hidden_size, width, bias=False)
        self.down = nn.Linear(width, 2, bias=False)
        if init_std > 0:
            for layer in (self.gate, self.up, self.down):
                nn.init.normal_(layer.weight, mean=0.0, std=init_std)

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """gate, up, down weights in the dtype of the input. The head computes in the dtype it is given (fp32 from
        :func:`language_matching_loss`), whatever dtype an engine hands its weights in (FSDP2's mixed-precision
        param_dtype casts every parameter of a unit to bf16 for the forward); a no-op for weights already in it."""
        return self.gate.weight.to(dtype), self.up.weight.to(dtype), self.down.weight.to(dtype)

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """pair: [..., 2H] -> logits [..., 2]."""
        gate, up, down = self._weights(pair.dtype)
        return F.linear(F.silu(F.linear(pair, gate)) * F.linear(pair, up), down)

    def all_pairs(self, s: torch.Tensor) -> torch.Tensor:
        """Logits for every ordered pair (s_i, s_j): s [S, H] -> [S, S, 2].

        Uses that a linear map of a concatenation splits: W [a; b] = W_a a + W_b b, so the
        [S, S, 2H] pair tensor is never built (memory S*S*width instead of S*S*2H).
        """
        H = self.hidden_size
        gate, up, down = self._weights(s.dtype)
        g = F.linear(s, gate[:, :H]).unsqueeze(1) + F.linear(s, gate[:, H:]).unsqueeze(0)
        u = F.linear(s, up[:, :H]).unsqueeze(1) + F.linear(s, up[:, H:]).unsqueeze(0)
        return F.linear(F.silu(g) * u, down)


def language_matching_loss(states: torch.Tensor, lang_ids: torch.Tensor, head: LanguageMatchingHead) -> torch.Tensor:
    """Cross-entropy over all (S)^2 ordered pairs of "same language?" predictions.

    states: [S, H] pooled last-layer states of every x and y in the batch (S = 2B).
    lang_ids: [S] integer language ids. Label of pair (i, j) is 1 if lang_ids[i] == lang_ids[j].
    Returns the mean over all S*S pairs (self-pairs included, as in the reference), a scalar.
    Computed in fp32 even under autocast (the head's weights are fp32).
    """
    with torch.autocast(device_type=states.device.type, enabled=False):
        logits = head.all_pairs(states.float())  # [S, S, 2]
        labels = (lang_ids.unsqueeze(1) == lang_ids.unsqueeze(0)).long()  # [S, S]
        return F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
