"""`conformance check --reference-from-candidate`: the official model re-run on a black-box candidate's own codes.

A black-box port gives codes and audio. Compared with the golden, a codes mismatch at frame f makes every later
frame and the whole waveform differ, so nothing after the first disagreement is judged on its own inputs. Here the
official pipeline runs the case again (its public API, the recorded inputs) with the candidate's codes forced:

* the talker's codebook-0 choice and the code predictor's codebooks 1..G-1 are teacher-forced to the candidate's
  codes (a logits processor that first keeps the official argmax, after the official processors such as the
  repetition penalty, then forces the candidate's token), so each of the candidate's tokens is judged against
  the official choice given the candidate's own history (`codes@teacher_forced`);
* the official pipeline then decodes those codes as it decodes its own (the voice-clone reference codes
  prepended and cut again), so the candidate's waveform is judged against the official decoder on the
  candidate's codes (`waveform@own_codes`), calibrated on the same run in float64.

Needs torch and the official package (the record side); `conformance check` imports this only with the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...capture.io import RecordedIO
from ...errors import UsageError
from ...store.reader import Case, GoldenStore
from .cases import CASES_BY_NAME
from .impl_binding import checkpoint_folder
from .record import CheckpointSource, OfficialModels, _precision


class _Force:
    """A logits processor: keeps the official choice (argmax of the scores the official processors left), then
    forces the candidate's token. `tokens[t]` is forced at generated position t; past its end nothing is forced."""

    def __init__(self, tokens: np.ndarray, chosen: list[int]) -> None:
        self.tokens = [int(t) for t in tokens]
        self.chosen = chosen

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = int(input_ids.shape[1])
        if step >= len(self.tokens):
            return scores
        self.chosen.append(int(scores[0].argmax()))
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.tokens[step]] = 0.0
        return forced


def _forced_run(models: OfficialModels, case: Case, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(official choices (frames, G), the official waveform of the candidate's codes) of one forced run."""
    from transformers import LogitsProcessorList

    spec = CASES_BY_NAME.get(case.name)
    if spec is None or spec.model == "codec":
        raise UsageError(f"--reference-from-candidate re-runs generation cases; {case.name} is not one")
    model = models.tts(spec.model).model
    talker = model.talker
    frames, groups = codes.shape
    talker_choices: list[int] = []
    sub_choices: list[list[int]] = []
    talker_generate, predictor_generate = talker.generate, talker.code_predictor.generate

    def forced_talker(*args: Any, **kwargs: Any) -> Any:
        kwargs["max_new_tokens"] = frames + 1  # the official count: N + 1 tokens give N frames
        kwargs["logits_processor"] = LogitsProcessorList([_Force(codes[:, 0], talker_choices)])
        return talker_generate(*args, **kwargs)

    def forced_predictor(*args: Any, **kwargs: Any) -> Any:
        frame = len(sub_choices)
        sub_choices.append([])
        if frame < frames:
            kwargs["logits_processor"] = LogitsProcessorList([_Force(codes[frame, 1:], sub_choices[-1])])
        return predictor_generate(*args, **kwargs)

    talker.generate, talker.code_predictor.generate = forced_talker, forced_predictor
    io = RecordedIO(case, str(case.provenance.get("size", "tiny")))
    try:
        spec.run(models, io)
    finally:
        del talker.generate, talker.code_predictor.generate
    chosen = np.full((frames, groups), -1, dtype=np.int64)
    chosen[:, 0] = talker_choices[:frames]
    for frame, row in enumerate(sub_choices[:frames]):
        chosen[frame, 1 : 1 + len(row)] = row
    return chosen, np.asarray(io.outputs["waveform"], dtype=np.float32)


_LOADED: dict[tuple[str, str], OfficialModels] = {}


def _models(source: CheckpointSource, dtype: str) -> OfficialModels:
    """The official models of one checkpoint and precision, loaded once per process (a check re-runs every case)."""
    key = (source.label, dtype)
    if key not in _LOADED:
        for other in [k for k in _LOADED if k[0] != source.label]:  # one checkpoint at a time: full size is large
            del _LOADED[other]
        _LOADED[key] = OfficialModels(source, dtype, "eager")
    return _LOADED[key]


def reference_from_candidate(store: GoldenStore, case: Case, outputs: dict[str, Any],
                             checkpoint: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The official re-run on the candidate's codes: {"codes@teacher_forced": (official choices, None),
    "waveform@own_codes": (float32 waveform, float64 twin)}; {} when the candidate gave no codes."""
    if "codes" not in outputs:
        return {}
    codes = np.asarray(outputs["codes"]).astype(np.int64)
    if codes.ndim != 2 or codes.shape[0] == 0:
        return {}
    model_type = str(case.provenance.get("model", ""))
    folder = checkpoint_folder(store, case, model_type, checkpoint)
    source = CheckpointSource.from_path(folder.parent if (folder.parent / model_type).is_dir() else folder)
    torch.manual_seed(0)
    with torch.inference_mode():
        chosen, wave = _forced_run(_models(source, "float32"), case, codes)
        with _precision("float64"):
            _, wave64 = _forced_run(_models(source, "float64"), case, codes)
    return {"codes@teacher_forced": (chosen, None), "waveform@own_codes": (wave, wave64)}
