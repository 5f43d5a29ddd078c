"""The named cases of the Qwen3-TTS golden store. Their inputs live here, in code.

Each case is one run of the official model through its public API (`Qwen3TTSModel.generate_*`,
`create_voice_clone_prompt`, `Qwen3TTSTokenizer.encode/decode`, or the decoder's `chunked_decode`), with
fixed inputs: real text through the real Qwen tokenizer, seeded random codes, or a synthetic speech-like
waveform. Generation is greedy (`do_sample=False, subtalker_dosample=False`).

Families: `codec_decode`, `codec_encode`, `speaker_encoder`, `generation`, `end_to_end`. A case lists the
model it needs (`codec` or a TTS model type) and which roots are hooked: generation cases hook the TTS
model (talker, code predictor, speaker encoder, prompt construction) and leave the codec unhooked, the
end-to-end case hooks everything. The in-context voice-clone cases also hook the codec's encoder side
(`codec_encoder`): it computes the reference codes the talker is prompted with, so a divergence there is
blamed on the codec encoder instead of entering the talker from nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...capture.io import CaseIO
from .signals import SAMPLE_RATE, edge_audio, speech_like


@dataclass(frozen=True)
class CaseSpec:
    name: str
    family: str
    description: str
    model: str  # "codec" or a TTS model type
    hooks: tuple[str, ...]  # roots to hook: "tts", "codec" (the whole codec) or "codec_encoder" (its encoder side);
    # "logits" ("subtalker_logits") also records every step's processed scores of the talker (the code predictor),
    # talker[.code_predictor].logits_processor (sampling.py); "decoder_outline" records the codec decoder's
    # chunked_decode only, not its forward per chunk and the layers inside; "outline" a generation's generate
    # calls only (codes-only cases: what tells inputs apart is the codes)
    run: Callable[[Any, CaseIO], None]
    params: dict[str, Any] = field(default_factory=dict)


# -- synthetic inputs ------------------------------------------------------------------------------------


def random_codes(seed: int, frames: int, codebooks: int, codebook_size: int = 2048) -> np.ndarray:
    """Seeded codes of shape (1, frames, codebooks), the layout `Qwen3TTSTokenizer.decode` takes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, codebook_size, size=(1, frames, codebooks), dtype=np.int64)


# -- runners -------------------------------------------------------------------------------------------------


GREEDY = {"do_sample": False, "subtalker_dosample": False}


def _frames(size: str, tiny: int, full: int) -> int:
    # port-shaped checkpoints keep the tiny sliding windows, so the tiny frame counts still span several of them
    return tiny if size in ("tiny", "port") else full


def _capture_generate(model: Any) -> tuple[Callable[[], Any], Callable[[], None]]:
    """Keep what the official `generate` returns (the codes) while the wrapper API runs on to decode."""
    box: dict[str, Any] = {}
    had_instance_attr = "generate" in vars(model)  # a recorder's wrapper, if one is installed
    inner = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        box["result"] = inner(*args, **kwargs)
        return box["result"]

    model.generate = generate

    def restore() -> None:
        if had_instance_attr:
            model.generate = inner
        else:
            del model.generate

    return (lambda: box.get("result")), restore


def _generation_outputs(io: CaseIO, result: Any, wavs: list[np.ndarray], sample_rate: int) -> None:
    """The case's final outputs, what a black-box port gives: codes (frames, codebooks), the waveform the official
    pipeline returns (the decode of those codes) and its sample rate."""
    codes_list, _hidden = result
    io.output("codes", codes_list[0].detach().cpu().numpy())
    io.output("waveform", np.asarray(wavs[0], dtype=np.float32))
    io.output("sample_rate", int(sample_rate))


def run_decode(models: Any, io: CaseIO, frames: tuple[int, int], seed: int) -> None:
    codec = models.codec()
    groups = codec.model.config.decoder_config.num_quantizers
    codes = io.input("codes", random_codes(seed, _frames(io.size, *frames), groups))
    wavs, sample_rate = codec.decode([{"audio_codes": codes[0]}])
    io.output("waveform", np.asarray(wavs[0], dtype=np.float32))
    io.output("sample_rate", int(sample_rate))


def run_chunked_decode(models: Any, io: CaseIO, frames: tuple[int, int], seed: int, chunk: tuple[int, int],
                       context: tuple[int, int]) -> None:  # fmt: skip
    import torch

    codec = models.codec()
    decoder = codec.model.decoder
    groups = codec.model.config.decoder_config.num_quantizers
    codes = io.input("codes", random_codes(seed, _frames(io.size, *frames), groups))
    chunk_size = io.input("chunk_size", _frames(io.size, *chunk))
    left_context = io.input("left_context_size", _frames(io.size, *context))
    with torch.inference_mode():
        wav = decoder.chunked_decode(torch.from_numpy(codes).transpose(1, 2), chunk_size=chunk_size,
                                     left_context_size=left_context)  # fmt: skip
    io.output("waveform", wav.float().numpy())


def run_encode(models: Any, io: CaseIO, seconds: tuple[float, float], seed: int) -> None:
    codec = models.codec()
    wav = io.input("waveform", speech_like(seed, seconds[0] if io.size == "tiny" else seconds[1]))
    encoded = codec.encode(wav, sr=SAMPLE_RATE)
    io.output("codes", encoded.audio_codes[0].cpu().numpy())


def run_speaker_encoder(models: Any, io: CaseIO, seconds: float, seed: int) -> None:
    model = models.tts("base").model
    wav = io.input("waveform", speech_like(seed, seconds))
    embedding = model.extract_speaker_embedding(wav, SAMPLE_RATE)
    io.output("speaker_embedding", embedding.float().cpu().numpy())


def run_custom_voice(models: Any, io: CaseIO, text: str, speaker: str, language: str, non_streaming: bool,
                     frames: tuple[int, int], model_type: str = "custom_voice") -> None:  # fmt: skip
    wrapper = models.tts(model_type)
    get, restore = _capture_generate(wrapper.model)
    try:
        wavs, sample_rate = wrapper.generate_custom_voice(
            text=io.input("text", text), speaker=io.input("speaker", speaker), language=io.input("language", language),
            non_streaming_mode=io.input("non_streaming_mode", non_streaming),
            max_new_tokens=io.input("max_new_tokens", _frames(io.size, *frames)), **GREEDY,
        )  # fmt: skip
    finally:
        restore()
    _generation_outputs(io, get(), wavs, sample_rate)


def run_voice_design(models: Any, io: CaseIO, text: str, instruct: str, language: str, non_streaming: bool,
                     frames: tuple[int, int]) -> None:  # fmt: skip
    wrapper = models.tts("voice_design")
    get, restore = _capture_generate(wrapper.model)
    try:
        wavs, sample_rate = wrapper.generate_voice_design(
            text=io.input("text", text), instruct=io.input("instruct", instruct), language=io.input("language", language),
            non_streaming_mode=io.input("non_streaming_mode", non_streaming),
            max_new_tokens=io.input("max_new_tokens", _frames(io.size, *frames)), **GREEDY,
        )  # fmt: skip
    finally:
        restore()
    _generation_outputs(io, get(), wavs, sample_rate)


def run_voice_clone(models: Any, io: CaseIO, text: str, language: str, ref_text: str | None, x_vector_only: bool,
                    non_streaming: bool, frames: tuple[int, int], seed: int, ref_seconds: float,
                    edges: bool = False) -> None:  # fmt: skip
    wrapper = models.tts("base")
    ref_audio = io.input("ref_audio", (edge_audio if edges else speech_like)(seed, ref_seconds))
    if ref_text is not None:
        ref_text = io.input("ref_text", ref_text)  # a re-run answers the recorded (or a changed) reference text
    get, restore = _capture_generate(wrapper.model)
    try:
        wavs, sample_rate = wrapper.generate_voice_clone(
            text=io.input("text", text), language=io.input("language", language),
            ref_audio=(ref_audio, SAMPLE_RATE), ref_text=ref_text,
            x_vector_only_mode=io.input("x_vector_only_mode", x_vector_only),
            non_streaming_mode=io.input("non_streaming_mode", non_streaming),
            max_new_tokens=io.input("max_new_tokens", _frames(io.size, *frames)), **GREEDY,
        )  # fmt: skip
    finally:
        restore()
    _generation_outputs(io, get(), wavs, sample_rate)


# -- option cases (issue 16): each makes one option of the official API decide an output ---------------------

# Generation options a case may pass to `generate_*` (recorded as inputs of the same name), besides the texts.
GENERATION_OPTIONS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "subtalker_dosample",
                      "subtalker_top_k", "subtalker_top_p", "subtalker_temperature", "eos_token_id")  # fmt: skip


def run_generate_options(models: Any, io: CaseIO, mode: str, text: str, language: str, frames: tuple[int, int],
                         options: dict[str, Any], speaker: str | None = None, instruct: str | None = None,
                         non_streaming: bool = True, seed: int = 0) -> None:  # fmt: skip
    """A custom-voice or voice-design generation with explicit generation options (greedy unless they sample).
    A sampled case seeds torch's generator first, so the recording is deterministic."""
    import torch

    wrapper = models.tts(mode)
    kwargs: dict[str, Any] = {**GREEDY}
    kwargs.update({name: io.input(name, value) for name, value in options.items()})
    if kwargs.get("do_sample") or kwargs.get("subtalker_dosample"):
        torch.manual_seed(io.input("seed", seed))
    common = dict(text=io.input("text", text), language=io.input("language", language),
                  non_streaming_mode=io.input("non_streaming_mode", non_streaming),
                  max_new_tokens=io.input("max_new_tokens", _frames(io.size, *frames)), **kwargs)  # fmt: skip
    get, restore = _capture_generate(wrapper.model)
    try:
        if mode == "custom_voice":
            wavs, sample_rate = wrapper.generate_custom_voice(speaker=io.input("speaker", speaker), **common)
        else:
            wavs, sample_rate = wrapper.generate_voice_design(instruct=io.input("instruct", instruct), **common)
    finally:
        restore()
    _generation_outputs(io, get(), wavs, sample_rate)


def run_chunked_decode_defaults(models: Any, io: CaseIO, frames: int, seed: int) -> None:
    """`chunked_decode(codes)` with neither chunk_size nor left_context_size: the defaults decide."""
    import torch

    codec = models.codec()
    decoder = codec.model.decoder
    groups = codec.model.config.decoder_config.num_quantizers
    codes = io.input("codes", random_codes(seed, frames, groups))
    io.input("chunked", True)
    with torch.inference_mode():
        wav = decoder.chunked_decode(torch.from_numpy(codes).transpose(1, 2))
    io.output("waveform", wav.float().numpy())


def run_speaker_encoder_edges(models: Any, io: CaseIO, seconds: float, seed: int) -> None:
    model = models.tts("base").model
    wav = io.input("waveform", edge_audio(seed, seconds))
    embedding = model.extract_speaker_embedding(wav, SAMPLE_RATE)
    io.output("speaker_embedding", embedding.float().cpu().numpy())


# -- the case list ----------------------------------------------------------------------------------------------

# Short texts keep the committed goldens small: the talker's logits (3072 per position) dominate them.
EN_TEXT = "Hello, world."
ZH_TEXT = "你好，世界。"
DESIGN_TEXT = "The quick brown fox."
CLONE_TEXT = "Match the reference."
REF_TEXT = "Reference voice."
APART_TEXT = "Hi."  # on the tiny checkpoints every speaker gives other codes within 8 frames (tests/.../test_options)


def _case(name: str, family: str, description: str, model: str, hooks: tuple[str, ...],
          run: Callable[..., None], **params: Any) -> CaseSpec:  # fmt: skip
    return CaseSpec(name, family, description, model, hooks, lambda m, io: run(m, io, **params), params)


CASES: tuple[CaseSpec, ...] = (
    _case("codec_decode_short", "codec_decode",
          "Codec decode of random codes shorter than the pre-transformer's sliding window.",
          "codec", ("codec",), run_decode, frames=(3, 50), seed=101),
    _case("codec_decode_long", "codec_decode",
          "Codec decode of random codes several sliding windows long (tiny window 4 frames, full 72).",
          "codec", ("codec",), run_decode, frames=(8, 100), seed=102),
    _case("codec_chunked_decode", "codec_decode",
          "The decoder's official chunked_decode over three chunks with left context, recorded at the chunked_decode "
          "call (the modules it runs are those codec_decode_long records, on the same kind of input).",
          "codec", ("codec", "decoder_outline"), run_chunked_decode, frames=(10, 100), seed=103, chunk=(4, 40), context=(2, 10)),
    _case("codec_encode", "codec_encode",
          "Codec encode (Mimi encoder, transformer, downsample, split RVQ) of a synthetic speech-like waveform.",
          "codec", ("codec",), run_encode, seconds=(0.06, 2.0), seed=201),
    _case("speaker_encoder", "speaker_encoder",
          "Speaker embedding: the official mel spectrogram and ECAPA-TDNN on a synthetic speech-like waveform.",
          "base", ("tts",), run_speaker_encoder, seconds=0.5, seed=301),
    _case("tts_custom_voice", "generation",
          "Custom voice (speaker id embedding, English), non-streaming text layout, greedy generation.",
          "custom_voice", ("tts",), run_custom_voice, text=EN_TEXT, speaker="Ryan", language="English",
          non_streaming=True, frames=(4, 8)),
    _case("tts_custom_voice_streaming", "generation",
          "Custom voice with the streaming text layout (text fed one token per generated frame).",
          "custom_voice", ("tts",), run_custom_voice, text=EN_TEXT, speaker="Ryan", language="English",
          non_streaming=False, frames=(4, 8)),
    _case("tts_dialect", "generation",
          "A dialect speaker (Dylan, Beijing dialect): the language id is overridden by the speaker's dialect; "
          "recorded at its outline (codes and generate calls: the talker's modules are those tts_custom_voice "
          "records, tts_dialect_apart shows the override changes the codes).",
          "custom_voice", ("tts", "outline"), run_custom_voice, text=ZH_TEXT, speaker="Dylan", language="Chinese",
          non_streaming=True, frames=(4, 8)),
    _case("tts_voice_design", "generation",
          "Voice design: a natural-language instruct prompt precedes the text, no speaker embedding.",
          "voice_design", ("tts",), run_voice_design, text=DESIGN_TEXT,
          instruct="A calm, low-pitched male voice, speaking slowly.", language="English",
          non_streaming=True, frames=(4, 8)),
    _case("tts_voice_clone_xvector", "generation",
          "Voice clone, x-vector only: the speaker embedding of a reference waveform replaces the speaker id.",
          "base", ("tts",), run_voice_clone, text=CLONE_TEXT, language="English", ref_text=None,
          x_vector_only=True, non_streaming=False, frames=(4, 8), seed=401, ref_seconds=0.3),
    _case("tts_voice_clone_icl", "generation",
          "Voice clone in-context: reference codes and reference text are prepended (streaming layout).",
          "base", ("tts", "codec_encoder"), run_voice_clone, text=CLONE_TEXT, language="English", ref_text=REF_TEXT,
          x_vector_only=False, non_streaming=False, frames=(4, 8), seed=402, ref_seconds=0.1),
    _case("tts_voice_clone_icl_non_streaming", "generation",
          "Voice clone in-context with the non-streaming layout, recorded at its outline (the codes, the generate "
          "calls and the reference's encoding; the talker's modules on an in-context prompt are those "
          "tts_voice_clone_icl records).",
          "base", ("tts", "codec_encoder", "outline"), run_voice_clone, text=CLONE_TEXT, language="English", ref_text=REF_TEXT,
          x_vector_only=False, non_streaming=True, frames=(4, 8), seed=403, ref_seconds=0.1),
    _case("end_to_end", "end_to_end",
          "Text to waveform: tokenizer, prompt, talker, code predictor, then codec decode, all hooked.",
          "custom_voice", ("tts", "codec"), run_custom_voice, text="End to end.", speaker="Vivian",
          language="English", non_streaming=True, frames=(4, 8)),
    # -- option cases (issue 16, docs/options.md): each makes one option decide an output ------------------
    _case("speaker_encoder_edges", "speaker_encoder",
          "Speaker embedding of audio at the edges: very low level, exact digital silence and clipping at +-1. "
          "Half the log-mel values sit at the clamp (1e-5 -> -11.5; without it silence drops to -13.6, the "
          "magnitude epsilon's floor, and without both to log(0)); the epsilon moves others by up to 0.04.",
          "base", ("tts",), run_speaker_encoder_edges, seconds=0.45, seed=302),
    _case("tts_sampling", "generation",
          "Sampling (do_sample) with temperature, top-k, top-p, a repetition penalty and the sub-talker's own "
          "sampling settings, torch seeded: every step's processed distribution (talker.logits_processor, "
          "talker.code_predictor.logits_processor) is recorded and replayed on the golden history, so the "
          "-inf masks of top-k/top-p/suppression and the scaled scores are judged without the random generator.",
          "custom_voice", ("tts", "logits", "subtalker_logits"), run_generate_options, mode="custom_voice",
          text=EN_TEXT, language="English", speaker="Ryan", frames=(5, 10), seed=1601,
          options={"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.3,
                   "subtalker_dosample": True, "subtalker_temperature": 1.3, "subtalker_top_k": 8,
                   "subtalker_top_p": 0.9}),
    _case("tts_repetition_penalty", "generation",
          "Greedy, Chinese, 7 frames with repetition_penalty 2.0: without the penalty (or at the default 1.05) the "
          "tiny talker repeats one code from frame 4 on, with it frames 5 and 6 change; the processed scores show "
          "the penalty on penalised tokens of both signs (divided when positive, multiplied when negative).",
          "custom_voice", ("tts", "logits"), run_generate_options, mode="custom_voice", text=ZH_TEXT,
          language="Chinese", speaker="Ryan", frames=(8, 16), options={"repetition_penalty": 2.0}),
    _case("tts_min_new_tokens", "generation",
          "The end token decides: eos_token_id is set to 1321, the code the tiny talker greedily prefers at the "
          "first step, so min_new_tokens (2, hard-coded in the official generate) masks it at steps 0 and 1 and "
          "it wins at step 2, ending the generation after two frames (ignoring min_new_tokens gives none).",
          "custom_voice", ("tts", "logits"), run_generate_options, mode="custom_voice", text=EN_TEXT,
          language="English", speaker="Ryan", frames=(12, 12), options={"eos_token_id": 1321}),
    _case("codec_chunked_decode_defaults", "codec_decode",
          "chunked_decode with its default chunk_size (300) and left_context_size (25): 301 frames, so the "
          "second chunk is one frame decoded after 25 frames of default left context.",
          "codec", ("codec", "decoder_outline"), run_chunked_decode_defaults, frames=301, seed=104),
    _case("tts_speakers_apart", "generation",
          "Custom voice whose codes change with each speaker (Ryan, Vivian, Dylan, Eric) and with the language "
          "on the tiny checkpoint (a short text, 7 frames), so a port ignoring the speaker fails on codes.",
          "custom_voice", ("tts", "outline"), run_generate_options, mode="custom_voice", text=APART_TEXT,
          language="English", speaker="Vivian", frames=(8, 16), options={}),
    _case("tts_dialect_apart", "generation",
          "A dialect speaker (Dylan) with Chinese on a short text, 7 frames: the dialect's language id replaces "
          "Chinese's, and the codes change with English (no override), another dialect (Eric) or a speaker "
          "without one (Ryan).",
          "custom_voice", ("tts", "outline"), run_generate_options, mode="custom_voice", text=APART_TEXT,
          language="Chinese", speaker="Dylan", frames=(8, 16), options={}),
    _case("tts_voice_clone_icl_apart", "generation",
          "Voice clone in-context on a short text, 7 frames: the codes change with the reference text.",
          "base", ("tts", "outline"), run_voice_clone, text=APART_TEXT, language="English", ref_text=REF_TEXT,
          x_vector_only=False, non_streaming=False, frames=(8, 16), seed=402, ref_seconds=0.1),
)  # fmt: skip

CASES_BY_NAME = {case.name: case for case in CASES}


def select(names: list[str] | None) -> list[CaseSpec]:
    from ...errors import UsageError

    if not names:
        return list(CASES)
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown:
        raise UsageError(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES_BY_NAME)}")
    return [CASES_BY_NAME[n] for n in names]
