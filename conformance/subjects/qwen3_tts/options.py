"""The option inventory: every argument of the official public API a Qwen3-TTS port implements, with the case that
makes it observable (docs/options.md is its prose; tests/subjects/test_options.py proves it).

An option is observable when changing it changes at least one golden output of its case: the case's outputs
(codes, waveform, speaker embedding) or the recorded outputs of the module implementing it (the processed scores
`talker.logits_processor`, `chunked_decode`). Each `Option` says how to change it: `changes` (case inputs replaced
by other values, each replacement must change an output) or `patch` (a named change of the official code, for
options no input carries: `min_new_tokens` is hard-coded to 2 in the official generate, `chunked_decode`'s
defaults are its signature's). `APIS` lists the official signatures checked against the inventory: an argument
added upstream fails the test until it is inventoried. Numpy-only, like cases.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Official signatures a port implements: (label, attribute path from the official namespace `checkpoints.official()`).
APIS: dict[str, tuple[str, ...]] = {
    "Qwen3TTSModel.generate_custom_voice": ("inference_model", "Qwen3TTSModel", "generate_custom_voice"),
    "Qwen3TTSModel.generate_voice_design": ("inference_model", "Qwen3TTSModel", "generate_voice_design"),
    "Qwen3TTSModel.generate_voice_clone": ("inference_model", "Qwen3TTSModel", "generate_voice_clone"),
    "Qwen3TTSModel.create_voice_clone_prompt": ("inference_model", "Qwen3TTSModel", "create_voice_clone_prompt"),
    # the generation keywords every generate_* forwards (with generate_config.json's values as defaults)
    "Qwen3TTSModel._merge_generate_kwargs": ("inference_model", "Qwen3TTSModel", "_merge_generate_kwargs"),
    "Qwen3TTSForConditionalGeneration.generate": ("tts_modeling", "Qwen3TTSForConditionalGeneration", "generate"),
    "Qwen3TTSTokenizerV2Decoder.chunked_decode": ("codec_modeling", "Qwen3TTSTokenizerV2Decoder", "chunked_decode"),
}


@dataclass(frozen=True)
class Option:
    """One argument (or generation setting) of the official API and how a case makes it decide an output."""

    name: str
    apis: tuple[str, ...]  # labels of APIS that take it (empty: a setting the official code fixes itself)
    default: str  # as the official code sets it
    case: str | None  # the case that makes it observable; None only with `why`
    how: str  # how the case makes it visible
    changes: tuple[dict[str, Any], ...] = ()  # input replacements, each must change an output of `case`
    patch: str | None = None  # a named change of the official code (tests/subjects/test_options.py)
    why: str = ""  # why no case observes it (internal argument, or a gap)
    outputs: tuple[str, ...] = field(default=())  # recorded module outputs compared besides the case outputs


CV = "Qwen3TTSModel.generate_custom_voice"
VD = "Qwen3TTSModel.generate_voice_design"
VC = "Qwen3TTSModel.generate_voice_clone"
PROMPT = "Qwen3TTSModel.create_voice_clone_prompt"
MERGE = "Qwen3TTSModel._merge_generate_kwargs"
GEN = "Qwen3TTSForConditionalGeneration.generate"
CHUNKED = "Qwen3TTSTokenizerV2Decoder.chunked_decode"
PROCESSED = ("talker.logits_processor", "talker.code_predictor.logits_processor")
# a reference waveform other than the recorded one: ("speech_like" | "edge_audio", seed, seconds)
OTHER_REFERENCE = ("speech_like", 7, 1.0)

OPTIONS: tuple[Option, ...] = (
    # -- what is said, by whom, how ---------------------------------------------------------------------------
    Option("text", (CV, VD, VC), "required", "tts_custom_voice", "the text tokens fill the prompt",
           changes=({"text": "Bye."},)),
    Option("speaker", (CV,), "required", "tts_speakers_apart",
           "a short text over 7 frames: each speaker's embedding row changes the codes on the tiny checkpoint",
           changes=({"speaker": "Ryan"}, {"speaker": "Dylan"}, {"speaker": "Eric"})),
    Option("language", (CV, VD, VC), "None (Auto)", "tts_speakers_apart",
           "the language id in the codec prefill (none for Auto: a shorter prompt) changes the codes",
           changes=({"language": "Chinese"}, {"language": "Auto"})),
    Option("dialect", (), "the speaker's spk_is_dialect", "tts_dialect_apart",
           "a dialect speaker with Chinese (or Auto) replaces the language id by its dialect's (Beijing for Dylan, "
           "Sichuan for Eric); English keeps it",
           changes=({"language": "English"}, {"speaker": "Eric"}, {"speaker": "Ryan"})),
    Option("instruct", (CV, VD), "None", "tts_voice_design", "the instruct text rows precede the prompt",
           changes=({"instruct": "A bright, fast, high-pitched voice."},)),
    Option("non_streaming_mode", (CV, VD, VC, GEN), "True (custom voice, voice design), False (voice clone)",
           "tts_custom_voice", "non-streaming puts the whole text in the prompt, streaming feeds it per frame",
           changes=({"non_streaming_mode": False},)),
    Option("ref_audio", (VC, PROMPT), "required for voice clone", "tts_voice_clone_xvector",
           "the reference's x-vector replaces the speaker row (another 1 s reference changes frame 1)", changes=({"ref_audio": OTHER_REFERENCE},)),
    Option("ref_text", (VC, PROMPT), "None (required in ICL mode)", "tts_voice_clone_icl_apart",
           "in-context mode prepends the reference text's tokens", changes=({"ref_text": "Another voice."},)),
    Option("x_vector_only_mode", (VC, PROMPT), "False", "tts_voice_clone_icl",
           "x-vector only drops the reference codes and text from the prompt",
           changes=({"x_vector_only_mode": True},)),
    Option("reference audio edges", (), "-", "speaker_encoder_edges",
           "digital silence and a very low level put half the log-mel values at the clamp (1e-5, log -11.5; "
           "without it -13.6, the magnitude epsilon's floor), clipping at +-1", patch="no_log_clamp"),
    # -- generation config ----------------------------------------------------------------------------------
    Option("max_new_tokens", (MERGE, GEN), "generate_config.json (8192 published), else 2048", "tts_custom_voice",
           "the talker stops after max_new_tokens steps (one frame fewer: the last step's code is not decoded)",
           changes=({"max_new_tokens": 3},)),
    Option("min_new_tokens", (), "2, hard-coded in Qwen3TTSForConditionalGeneration.generate", "tts_min_new_tokens",
           "the end token (eos_token_id 1321) is the greedy choice at step 0: min_new_tokens masks it at steps 0 "
           "and 1 and it ends the generation at step 2 (without the mask: no frame)", patch="no_min_new_tokens",
           outputs=PROCESSED),
    Option("eos_token_id", (GEN,), "talker_config.codec_eos_token_id (2150)", "tts_min_new_tokens",
           "generation stops when the talker picks it", changes=({"eos_token_id": 2150},), outputs=PROCESSED),
    Option("suppress_tokens", (), "the top 1024 codec ids except codec_eos_token_id, hard-coded in generate",
           "tts_min_new_tokens", "their processed scores are -inf at every step (judged exactly)",
           patch="no_suppress_tokens", outputs=PROCESSED),
    Option("repetition_penalty", (MERGE, GEN), "1.05", "tts_repetition_penalty",
           "at 2.0 the codes stop repeating one code; penalised scores of both signs in the processed scores",
           changes=({"repetition_penalty": 1.0},), outputs=PROCESSED),
    Option("do_sample", (MERGE, GEN), "True", "tts_sampling", "greedy gives other codes than the seeded draw",
           changes=({"do_sample": False},), outputs=PROCESSED),
    Option("temperature", (MERGE, GEN), "0.9", "tts_sampling", "scales the talker's processed scores",
           changes=({"temperature": 1.0},), outputs=PROCESSED),
    Option("top_k", (MERGE, GEN), "50", "tts_sampling", "the talker's scores outside the top 20 are -inf",
           changes=({"top_k": 50},), outputs=PROCESSED),
    Option("top_p", (MERGE, GEN), "1.0", "tts_sampling", "the talker's scores beyond 0.8 of the mass are -inf",
           changes=({"top_p": 1.0},), outputs=PROCESSED),
    Option("subtalker_dosample", (MERGE, GEN), "True", "tts_sampling",
           "the code predictor samples its codebooks (greedy gives others)", changes=({"subtalker_dosample": False},),
           outputs=PROCESSED),
    Option("subtalker_temperature", (MERGE, GEN), "0.9", "tts_sampling", "scales the code predictor's scores",
           changes=({"subtalker_temperature": 1.0},), outputs=PROCESSED),
    Option("subtalker_top_k", (MERGE, GEN), "50", "tts_sampling", "the code predictor's scores outside the top 8",
           changes=({"subtalker_top_k": 50},), outputs=PROCESSED),
    Option("subtalker_top_p", (MERGE, GEN), "1.0", "tts_sampling", "the code predictor's scores beyond 0.9",
           changes=({"subtalker_top_p": 1.0},), outputs=PROCESSED),
    # -- decoding ---------------------------------------------------------------------------------------------
    Option("chunk_size", (CHUNKED,), "300", "codec_chunked_decode", "three chunks of 4 frames",
           changes=({"chunk_size": 5},)),
    Option("left_context_size", (CHUNKED,), "25", "codec_chunked_decode", "2 frames of context before a chunk",
           changes=({"left_context_size": 0},)),
    Option("chunked_decode defaults", (), "chunk_size 300, left_context_size 25", "codec_chunked_decode_defaults",
           "301 frames decoded with neither size passed: the second chunk is one frame after the default context",
           patch="chunked_decode_defaults"),
    # -- arguments no case changes, with the reason ------------------------------------------------------------
    Option("voice_clone_prompt", (VC, GEN), "None", None, "",
           why="the prompt create_voice_clone_prompt returns; passing it instead of ref_audio runs the same path"),
    Option("input_ids", (GEN,), "-", None, "", why="built by the wrapper from text (the text option)"),
    Option("instruct_ids", (GEN,), "-", None, "", why="built by the wrapper from instruct (the instruct option)"),
    Option("ref_ids", (GEN,), "-", None, "", why="built by the wrapper from ref_text (the ref_text option)"),
    Option("languages", (GEN,), "-", None, "", why="the wrapper's language list (the language option)"),
    Option("speakers", (GEN,), "-", None, "", why="the wrapper's speaker list (the speaker option)"),
    Option("codes", (CHUNKED,), "-", None, "", why="the input itself (every codec_decode case)"),
    Option("batch and padding", (), "lists of texts: prompts left-padded", None, "",
           why="not covered yet: no case generates a batch (the impl mirrors the padding, tests/impl check it)"),
)  # fmt: skip

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
