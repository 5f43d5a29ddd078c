"""Precision twins of the official model: the same modules in bfloat16 or float16, or with their weights stored in
a quantized format (conformance/precisions.py), run beside a recording to measure that precision's own noise.

* Isolated: the oracle re-runs every hooked call on each twin with the recorded inputs cast to the twin's compute
  dtype (capture/oracle.py, `OracleTwin`): mode `isolated:<precision>` in the oracle table.
* Chained: after a case is recorded, the whole case runs again on each twin, hooked by `ChainedNoiseTap`, and every
  tensor it reports (inputs and outputs of every call) is compared with the same tensor of the clean float64 twin
  recording: mode `chained:<precision>`, as the float32 golden's own chained noise is its difference from that
  float64 twin.

Only noise records are stored (a few numbers per tensor), never the twins' tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..metrics import noise_metrics
from ..precisions import Precision, noise_mode
from ..store.reader import Case
from ..store.schema import bfloat16_to_float32
from .oracle import STATUS_DISCRETE, STATUS_OK, STATUS_STRUCTURE
from .recorder import Hooks, flatten, tensor_to_numpy

TORCH_COMPUTE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MARK = "_conformance_weight_format"


def apply_weight_format(roots: Mapping[str, torch.nn.Module], precision: Precision) -> int:
    """Store every weight of the roots in the precision's weight format, in place (a parameter already stored is
    left alone, so roots sharing modules are treated once). Returns how many tensors were changed."""
    fmt = precision.weight_format
    if fmt is None:
        return 0
    changed = 0
    with torch.no_grad():
        for root in roots.values():
            for param in root.parameters():
                if getattr(param, _MARK, None) == fmt.name or not param.is_floating_point():
                    continue
                if fmt.applies(tuple(param.shape)):
                    values = fmt.roundtrip(param.detach().float().cpu().numpy())
                    param.copy_(torch.from_numpy(values).to(param.dtype))
                    changed += 1
                setattr(param, _MARK, fmt.name)
    return changed


def _widened(value: Any) -> tuple[np.ndarray, str]:
    raw, logical = tensor_to_numpy(value)
    if logical == "bfloat16":
        return bfloat16_to_float32(raw), "bfloat16"
    return raw, raw.dtype.name


class ChainedNoiseTap(Hooks):
    """Hooks a twin's whole-case run and measures each reported tensor against the float64 twin recording's
    (`reference`, the same case): rows (key, call, role, status, metrics) in `rows`, mode `chained:<precision>`.
    Calls are numbered per key in the order they start, as the recorder numbers them; a call or tensor the
    reference lacks, or of another shape, gets status structure_mismatch; integers that differ (another token)
    make every later float record of the case discrete_mismatch: past a flipped decision the twin's tensors are
    no longer a noise measurement."""

    def __init__(self, roots: Mapping[str, torch.nn.Module], reference: Case, precision: str, dtype: str = "float32",
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(roots, **kwargs)
        self.reference = reference
        self.mode = noise_mode("chained", precision)
        self.dtype = dtype  # the golden's dtype: metrics in its units, as the golden's own noise records are
        self.rows: list[tuple[str, int, str, str, dict[str, float]]] = []
        self.diverged = False
        self._counts: dict[str, int] = {}
        self._stacks: dict[int, list[tuple[str, int]]] = {}

    def _begin(self, token: int, key: str, path: str, method: str, class_name: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        call = self._counts.get(key, 0)
        self._counts[key] = call + 1
        self._stacks.setdefault(token, []).append((key, call))
        self._measure(key, call, {**flatten(tuple(args), "args"), **flatten(dict(kwargs), "kwargs")})

    def _end(self, token: int, output: Any) -> None:
        key, call = self._stacks[token].pop()
        self._measure(key, call, flatten(output, "outputs", top=True))

    def _measure(self, key: str, call: int, leaves: dict[str, Any]) -> None:
        if not self.reference.has_call(key, call):
            return
        for role, value in leaves.items():
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                continue
            try:
                leaf = self.reference.leaf(key, call, role)
            except Exception:  # a leaf the golden does not hold (another structure): nothing to measure
                continue
            if not leaf.is_tensor or leaf.tier != "full":
                continue
            mine, _ = _widened(value)
            if tuple(mine.shape) != tuple(leaf.shape):
                self.rows.append((key, call, role, STATUS_STRUCTURE, {}))
                continue
            reference = self.reference.tensor(leaf)
            if mine.dtype.kind not in "fc" or reference.dtype.kind not in "fc":
                if not np.array_equal(mine, reference):
                    self.diverged = True
                    self.rows.append((key, call, role, STATUS_DISCRETE, {}))
                continue
            status = STATUS_DISCRETE if self.diverged else STATUS_OK
            with np.errstate(over="ignore", invalid="ignore"):  # additive masks: each dtype's own lowest value
                metrics = noise_metrics(reference.astype(np.float64), mine, self.dtype)
            self.rows.append((key, call, role, status, metrics))


__all__ = ["TORCH_COMPUTE", "ChainedNoiseTap", "apply_weight_format"]
