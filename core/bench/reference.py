"""LLaDA's reference ``generate()`` loop, written from its published algorithm, for the benches.

Every step runs the whole canvas through the backbone (no cache), takes float64 Gumbel-max
candidates at temperature > 0 and a full softmax for the confidence, masks positions right of
the current block, and reveals the even split of each block's masked count (remainder first)
with a per-row top-k loop. One deviation: the [MASK] id is never a candidate (a trained LLaDA
never predicts it; the engine bans it the same way), so random-weight backbones compare exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..backbone import Backbone

__all__ = ["reference_generate", "reference_select"]


def reference_select(model: Backbone, hidden, x, block_end: int, k: torch.Tensor, temperature: float, mask_id: int = 126_336):
    """One reveal step of the reference loop on hidden states ``[B, L, D]`` of canvas ``x [B, L]``."""
    logits = model.logits(hidden)  # [B, L, V] full canvas
    logits[..., mask_id] = -math.inf
    if temperature > 0:
        noisy = logits.to(torch.float64)
        noise = torch.rand_like(noisy, dtype=torch.float64)
        noisy = noisy.exp() / (-torch.log(noise)) ** temperature
    else:
        noisy = logits
    x0 = torch.argmax(noisy, dim=-1)  # [B, L]
    p = F.softmax(logits.to(torch.float64), dim=-1)  # [B, L, V]
    x0_p = torch.gather(p, -1, x0[..., None]).squeeze(-1)  # [B, L]
    x0_p[:, block_end:] = -math.inf
    mask_index = x == mask_id
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -math.inf)
    transfer = torch.zeros_like(x0, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        _, idx = torch.topk(confidence[j], k=int(k[j]))
        transfer[j, idx] = True
    x = x.clone()
    x[transfer] = x0[transfer]
    return x


@torch.no_grad()
def reference_generate(
    model, prompt: torch.Tensor, gen_length: int, steps: int, block_length: int, mask_id: int = 126_336, temperature: float = 0.0
) -> torch.Tensor:
    """The whole reference loop: ``prompt [B, P]`` -> canvas ``[B, P + gen_length]``."""
    x = torch.cat([prompt, torch.full((prompt.shape[0], gen_length), mask_id, device=prompt.device)], dim=1)
    num_blocks = gen_length // block_length
    per_block = steps // num_blocks
    for nb in range(num_blocks):
        start, end = prompt.shape[1] + nb * block_length, prompt.shape[1] + (nb + 1) * block_length
        n = (x[:, start:end] == mask_id).sum(dim=1, keepdim=True)
        counts = torch.zeros(x.shape[0], per_block, dtype=torch.long) + n.cpu() // per_block
        for j in range(x.shape[0]):
            counts[j, : int(n[j] % per_block)] += 1
        for i in range(per_block):
            x = reference_select(model, model.hidden_states(x), x, end, counts[:, i], temperature, mask_id)
    return x
