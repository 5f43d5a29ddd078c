"""What the check engine needs to know about Qwen3-TTS beyond module names (numpy only).

* where the generated codes of a case are (the official `generate` returns a list of (frames, codebooks)
  code tensors, recorded as `:generate#0/outputs/0/0`);
* which logits chose the code of a given (frame, codebook): codebook 0 of frame f comes from the
  talker's `codec_head` call f (call 0 is the prefill); codebook g >= 1 from the code predictor's
  `lm_head.{g-1}` call f (each head runs once per frame);
* which outputs to keep from a chained run for the report (codes and waveforms);
* which calls are whole-model generation steps (`model_step`): the talker's forward `talker#f` computes the
  logits of codebook 0 of frame f from the golden history (KV cache and inputs) through every layer, the code
  predictor's forward `talker.code_predictor#c` those of codebook 1 + c mod (G - 1) of frame c div (G - 1).
  Their isolated replay is teacher forcing of the whole model, not only of its logits head.
"""

from __future__ import annotations

from ...store.reader import Case

CODES = (":generate", 0, "outputs/0/0")
TOKEN_LOGITS = ["talker.codec_head", "talker.code_predictor.lm_head.*"]
# whole-model steps: (module key, its logits output) -> codebook 0 (the talker) or 1.. (the code predictor)
MODEL_LOGITS = {("talker", "outputs/logits"): "talker", ("talker.code_predictor", "outputs/logits"): "code_predictor"}


class Qwen3TTSSubject:
    name = "qwen3_tts"

    def codes(self, case: Case) -> tuple[str, int, str] | None:
        key, call, role = CODES
        if not case.has_call(key, call):
            return None
        try:
            case.leaf(key, call, role)
        except Exception:
            return None
        return CODES

    def logits(self, case: Case, frame: int, codebook: int) -> tuple[str, int] | None:
        key = "talker.codec_head" if codebook == 0 else f"talker.code_predictor.lm_head.{codebook - 1}"
        return (key, frame) if case.has_call(key, frame) else None

    def model_step(self, case: Case, key: str, call: int, role: str) -> tuple[int, int] | None:
        """(frame, codebook) whose token the whole-model call `key#call` chose with its `role` logits, or None
        when that output is not a whole-model step's logits."""
        model = MODEL_LOGITS.get((key, role))
        if model is None:
            return None
        if model == "talker":
            return call, 0
        heads = [name for name in case.keys() if name.startswith("talker.code_predictor.lm_head.")]  # noqa: SIM118
        steps = len(heads)  # G - 1 code predictor steps per frame
        return (call // steps, 1 + call % steps) if steps else None

    def keep(self, case: Case) -> list[str]:
        return [":generate", "speech_tokenizer:decode", "speech_tokenizer.decoder:chunked_decode",
                ":extract_speaker_embedding", "speech_tokenizer:encode"]  # fmt: skip


SUBJECT = Qwen3TTSSubject()
