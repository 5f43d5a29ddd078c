"""Qwen3 causal LM (transformers' Qwen3ForCausalLM) in NumPy, built from impl.common: see model.py.
Components live at the official module paths; `nn` (impl.common.nn) reports every call to a checker
while `nn.tapping(...)` is active."""

from ..common import nn
from .model import Qwen3Config, Qwen3ForCausalLM, load

__all__ = ["Qwen3Config", "Qwen3ForCausalLM", "load", "nn"]
