"""A black-box port of Qwen3-TTS: text in, codes and audio out, nothing in between.

It plays the part of a native port that exposes only its public API (most real ports do): it reads one case of
`conformance export` (manifest.json's input_values and inputs.safetensors), runs it end to end and writes only the
case's final outputs under the documented names `outputs/codes`, `outputs/waveform` and `outputs/sample_rate`.
Underneath, the arithmetic is the project's NumPy implementation (impl/qwen3_tts, no torch), driven greedily from
the export alone, the way a port's runner would drive its own engine.

    python examples/blackbox_port/port.py --export golden-export/tts_custom_voice \
        --checkpoint goldens/checkpoints/qwen3_tts-tiny -o dump/tts_custom_voice.safetensors

Port bugs to try the gate with: `--decoder-scale 1e-3` scales the decoder's output (a broken codec output stage);
`--extra-frame` returns max_new_tokens frames where the official code returns max_new_tokens - 1 (the other
frame-count convention: it generates with max_new_tokens + 1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def run(export: Path, checkpoint: Path, decoder_scale: float = 1.0, extra_frame: bool = False) -> dict[str, np.ndarray]:
    from impl.qwen3_tts import codec, pipeline, tts

    manifest = json.loads((export / "manifest.json").read_text())
    inputs: dict[str, object] = dict(manifest["input_values"])
    tensors = export / manifest["files"]["inputs"]
    if tensors.exists():
        inputs.update(load_file(str(tensors)))
    if extra_frame:
        inputs["max_new_tokens"] = int(inputs["max_new_tokens"]) + 1
    model_type = manifest["model"]
    root = tts.load_tts(checkpoint / model_type)
    if decoder_scale != 1.0:  # a port bug in the codec's output stage
        decoder = root.speech_tokenizer.decoder
        forward = decoder.forward
        decoder.forward = lambda *a, **k: forward(*a, **k) * np.float32(decoder_scale)
    out = pipeline.run_case(root, model_type, inputs)
    _ = codec  # the codec is loaded by load_tts from checkpoint/<model>/speech_tokenizer
    return {"outputs/codes": np.asarray(out["codes"], dtype=np.int64),
            "outputs/waveform": np.asarray(out["waveform"], dtype=np.float32),
            "outputs/sample_rate": np.asarray([out["sample_rate"]], dtype=np.int64)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True, help="one case's folder of `conformance export`")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint root (one folder per model)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the dump to write (.safetensors)")
    parser.add_argument("--decoder-scale", type=float, default=1.0, help="scale the decoder's output (a port bug)")
    parser.add_argument("--extra-frame", action="store_true", help="return max_new_tokens frames (not N - 1)")
    args = parser.parse_args()
    tensors = run(args.export, args.checkpoint, args.decoder_scale, args.extra_frame)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    case = json.loads((args.export / "manifest.json").read_text())["case"]
    save_file(tensors, str(args.output), metadata={"case": case, "port": "blackbox_port"})


if __name__ == "__main__":
    main()
