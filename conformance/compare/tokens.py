"""Discrete outputs: classify a top-1 disagreement by the reference's own top-1 margin (numpy only).

Generated tokens are never compared with a tolerance. When a candidate picks a different token than
the official model, what matters is how close the official model itself was to picking it:

* exact_tie   - the golden's two best logits are equal: either choice is correct
* near_tie    - the golden's top-1 margin is below the policy's `near_tie_margin`
* token_swap  - the candidate picked the golden's second choice, with a clear golden margin
* logit_drift - the candidate picked something further down: its logits are wrong, not just close
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGREE, EXACT_TIE, NEAR_TIE, TOKEN_SWAP, LOGIT_DRIFT = "agree", "exact_tie", "near_tie", "token_swap", "logit_drift"
CLASSES = (AGREE, EXACT_TIE, NEAR_TIE, TOKEN_SWAP, LOGIT_DRIFT)


@dataclass(frozen=True)
class Classified:
    classification: str
    golden_token: int
    candidate_token: int
    golden_second: int
    margin: float


def last_position(logits: np.ndarray) -> np.ndarray:
    """(rows, vocab) next-token logits: the last position of each sequence of a (..., L, V) tensor."""
    array = np.asarray(logits)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim == 2:
        return array[-1:, :]
    return array[..., -1, :].reshape(-1, array.shape[-1])


def top2(logits: np.ndarray) -> tuple[int, int, float]:
    """(best index, second index, best - second) of a 1-D logit vector; ties resolve to the lower index,
    as argmax does."""
    values = np.asarray(logits, dtype=np.float64)
    best = int(np.argmax(values))
    rest = values.copy()
    rest[best] = -np.inf
    second = int(np.argmax(rest))
    return best, second, float(values[best] - values[second])


def classify(golden_logits: np.ndarray, candidate_logits: np.ndarray | None, near_tie_margin: float,
             candidate_token: int | None = None) -> Classified:  # fmt: skip
    """Classify the candidate's choice against the golden logits. The candidate's choice is the argmax of
    its logits, or `candidate_token` when given (the token it actually generated)."""
    best, second, margin = top2(golden_logits)
    if candidate_token is None:
        if candidate_logits is None:
            raise ValueError("give the candidate's logits or its token")
        candidate_token = int(np.argmax(np.asarray(candidate_logits, dtype=np.float64)))
    if candidate_token == best:
        kind = AGREE
    elif margin == 0.0 and float(np.asarray(golden_logits, dtype=np.float64)[candidate_token]) == float(
        np.asarray(golden_logits, dtype=np.float64)[best]
    ):
        kind = EXACT_TIE
    elif margin < near_tie_margin and candidate_token == second:
        kind = NEAR_TIE
    elif candidate_token == second:
        kind = TOKEN_SWAP
    else:
        kind = LOGIT_DRIFT
    return Classified(kind, best, candidate_token, second, margin)
