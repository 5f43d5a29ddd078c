"""A clean float64 Qwen3 (what the float64 goldens and the isolated oracle run).

transformers' Qwen3 forces float32 in three places whatever the model's dtype: Qwen3RMSNorm (`.to(torch.float32)`),
Qwen3RotaryEmbedding (`.float()` under a disabled autocast) and eager attention's softmax (`dtype=torch.float32`).
A `.double()` model is therefore float64 except there, and differs from true float64 by about as much as float32
does: a poor reference for measuring float32's own error. Worse, in a padded batch the float64 mask value
(finfo(float64).min) becomes -inf in the float32 softmax, a fully masked padding row becomes NaN and the NaN
reaches the real rows through the next layer.

`clean_precision()` swaps those three for versions that compute in the input's dtype when it is float64, and calls
the originals otherwise (float32 runs are bit for bit the official ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F


def _modeling() -> Any:
    from transformers.models.qwen3 import modeling_qwen3

    return modeling_qwen3


def _pristine(function: Any) -> Any:
    """The official function even while a recorder has wrapped the module attribute."""
    while getattr(function, "_conformance_wrapper", False):
        function = function.__wrapped__
    return function


def _patches() -> list[tuple[Any, str, Any]]:
    q3 = _modeling()
    rms_original = q3.Qwen3RMSNorm.forward
    rope_original = q3.Qwen3RotaryEmbedding.forward
    attention_original = _pristine(q3.eager_attention_forward)

    def rms_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.dtype != torch.float64:
            return rms_original(self, hidden_states)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

    def rope_forward(self: Any, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dtype != torch.float64 or self.rope_type != "default":
            return rope_original(self, x, position_ids)
        with torch.no_grad():
            config = self.config
            dim = config.head_dim
            inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float64) / dim))
            inv = inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)  # (B, D/2, 1)
            freqs = (inv @ position_ids[:, None, :].to(torch.float64)).transpose(1, 2)  # (B, T, D/2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
            return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def eager_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: Any, scaling: float, dropout: float = 0.0, **kwargs: Any) -> Any:  # fmt: skip
        if query.dtype != torch.float64:
            return attention_original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        key_states = q3.repeat_kv(key, module.num_key_value_groups)  # (B, H, S, D)
        value_states = q3.repeat_kv(value, module.num_key_value_groups)
        weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, H, T, S)
        if attention_mask is not None:
            weights = weights + attention_mask[:, :, :, : key_states.shape[-2]]
        weights = F.dropout(F.softmax(weights, dim=-1), p=dropout, training=module.training)
        return torch.matmul(weights, value_states).transpose(1, 2).contiguous(), weights  # (B, T, H, D)

    return [(q3.Qwen3RMSNorm, "forward", rms_forward), (q3.Qwen3RotaryEmbedding, "forward", rope_forward),
            (q3, "eager_attention_forward", eager_attention)]  # fmt: skip


_PATCHES: list[tuple[Any, str, Any]] = []
_DEPTH = [0]


@contextlib.contextmanager
def clean_precision() -> Iterator[None]:
    """Within this block Qwen3's float32-forcing spots compute in float64 when their input is float64."""
    if not _PATCHES:
        _PATCHES.extend(_patches())
    saved = []
    if _DEPTH[0] == 0:
        for owner, name, replacement in _PATCHES:
            saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
            setattr(owner, name, replacement)
    _DEPTH[0] += 1
    try:
        yield
    finally:
        _DEPTH[0] -= 1
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)
