"""Qwen3-TTS (qwen-tts 0.1.1, the 12 Hz models) in NumPy, built from impl.common.

Reading order: tts.py (the root model and the prompt layout), talker.py and code_predictor.py (the two
autoregressive decoders, sharing decoder.py's layer), speaker.py (mel + ECAPA-TDNN), codec.py with
codec_decoder.py and codec_encoder.py (the speech tokenizer), pipeline.py (the user-facing API) and
text.py (the tokenizer). Components live at the official module paths; `nn` (impl.common.nn, re-exported
for the bindings) reports every call to a checker while `nn.tapping(...)` is active.
"""

from ..common import nn

__all__ = ["nn"]
