"""The named cases of the Qwen3 causal LM golden store, with their inputs (token ids, no tokenizer: a port's
tokenizer is checked by other means). Each runs the official model through its public API, as a user would:

* `lm_prefill`: one forward over a prompt, the logits of every position (and the KV cache it returns);
* `lm_greedy`: greedy decoding with the KV cache (`generate(..., do_sample=False)`): a prefill, then one
  forward per new token on the cached keys and values;
* `lm_padded_batch`: two prompts of different lengths in one batch, left-padded with the pad token and masked
  (attention_mask 0), decoded greedily together: positions from the mask, padding rows fully masked.

Attention is eager (masks and weights are explicit tensors in the goldens). Numpy only: the runners import torch
when they run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...capture.io import CaseIO
from ..torch_model import TorchCase
from .checkpoints import ENDOFTEXT

PROMPT = [151, 17, 294, 88, 42, 365, 8, 230, 61]
SHORT_PROMPT = [77, 301, 29, 140, 5]
GREEDY = {"do_sample": False}  # the checkpoint's generation_config samples, like the published one
NEW_TOKENS = 8


def left_padded(prompts: list[list[int]], pad: int = ENDOFTEXT) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), each (B, T): prompts right-aligned, padding masked with 0."""
    width = max(len(p) for p in prompts)
    ids = np.full((len(prompts), width), pad, dtype=np.int64)
    mask = np.zeros((len(prompts), width), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def run_prefill(model: Any, io: CaseIO) -> None:
    import torch

    ids = io.input("input_ids", np.array([PROMPT], dtype=np.int64))
    out = model(input_ids=torch.from_numpy(ids))
    io.output("logits", out.logits.detach().numpy())


def _generate(model: Any, io: CaseIO, prompts: list[list[int]]) -> None:
    import torch

    padded, ones = left_padded(prompts)
    ids = io.input("input_ids", padded)
    mask = io.input("attention_mask", ones)
    steps = io.input("max_new_tokens", NEW_TOKENS)
    sequences = model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), max_new_tokens=steps,
                               **GREEDY)  # fmt: skip
    io.output("sequences", sequences.numpy())


def run_greedy(model: Any, io: CaseIO) -> None:
    _generate(model, io, [PROMPT])


def run_padded_batch(model: Any, io: CaseIO) -> None:
    _generate(model, io, [PROMPT, SHORT_PROMPT])


CASES = (
    TorchCase("lm_prefill", "One forward pass over a nine-token prompt: the logits of every position and its KV cache.",
              run_prefill, family="prefill", model="lm"),
    TorchCase("lm_greedy", f"Greedy decoding of {NEW_TOKENS} tokens after a nine-token prompt, with the KV cache: a "
              "prefill, then one forward per token.", run_greedy, family="generation", model="lm"),
    TorchCase("lm_padded_batch", f"Greedy decoding of {NEW_TOKENS} tokens for a batch of a nine- and a five-token "
              "prompt, left-padded and masked.", run_padded_batch, family="generation", model="lm"),
)  # fmt: skip
CASES_BY_NAME = {case.name: case for case in CASES}
