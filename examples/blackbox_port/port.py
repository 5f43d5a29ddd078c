"""A black-box port of Qwen3-TTS: text in, codes and audio out, nothing in between.

It plays the part of a native port that exposes only its public API (most real ports do): it reads one case of
`conformance export` (manifest.json's input_values and inputs.safetensors), runs it end to end and writes only the
case's final outputs under the documented names `outputs/codes`, `outputs/waveform` and `outputs/sample_rate`.
Underneath, the arithmetic is the project's NumPy implementation (impl/qwen3_tts, no torch), driven greedily from
the export alone, the way a port's runner would drive its own engine.

    python examples/blackbox_port/port.py --export golden-export/tts_custom_voice \
        --checkpoint goldens/checkpoints/qwen3_tts-tiny -o dump/tts_custom_voice.safetensors

Port bugs to try the gate with: `--decoder-scale 1e-3` scales the decoder's output (a broken codec output stage);
`--extra-frames 1` returns max_new_tokens frames where the official code returns max_new_tokens - 1 (the other
frame-count convention; 2 is a port that generates too long).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def run(export: Path, checkpoint: Path, decoder_scale: float = 1.0, extra_frames: int = 0) -> dict[str, np.ndarray]:
    """One case of the export, end to end: its final outputs under the documented names."""
    from impl.qwen3_tts import pipeline, tts

    manifest = json.loads((export / "manifest.json").read_text())
    inputs: dict[str, object] = dict(manifest["input_values"])
    tensors = export / manifest["files"]["inputs"]
    if tensors.exists():
        inputs.update(load_file(str(tensors)))
    if extra_frames:  # the other convention: max_new_tokens=N yields N frames (here N + extra - 1)
        inputs["max_new_tokens"] = int(inputs["max_new_tokens"]) + extra_frames
    model_type = manifest["model"]
    root = tts.load_tts(checkpoint / model_type)  # config.json, model.safetensors, speech_tokenizer/
    if decoder_scale != 1.0:  # a port bug in the codec's output stage
        decoder = root.speech_tokenizer.decoder
        forward = decoder.forward
        decoder.forward = lambda *a, **k: forward(*a, **k) * np.float32(decoder_scale)
    out = pipeline.run_case(root, model_type, inputs)
    return {"outputs/codes": np.asarray(out["codes"], dtype=np.int64),
            "outputs/waveform": np.asarray(out["waveform"], dtype=np.float32),
            "outputs/sample_rate": np.asarray([out["sample_rate"]], dtype=np.int64)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, required=True,
                        help="one case's folder of `conformance export`, or the export's root (every case in it)")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint root (one folder per model)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="the dump: a .safetensors file for one case, else a folder of <case>.safetensors")  # fmt: skip
    parser.add_argument("--cases", nargs="+", help="only these cases of the export's root")
    parser.add_argument("--decoder-scale", type=float, default=1.0, help="scale the decoder's output (a port bug)")
    parser.add_argument("--extra-frames", type=int, default=0,
                        help="generate this many frames more (1: the max_new_tokens=N yields N convention)")  # fmt: skip
    args = parser.parse_args()
    if (args.export / "manifest.json").is_file() and "case" in json.loads((args.export / "manifest.json").read_text()):
        folders = [args.export]
    else:
        folders = sorted(f for f in args.export.iterdir() if (f / "manifest.json").is_file())
        folders = [f for f in folders if args.cases is None or f.name in args.cases]
    for folder in folders:
        manifest = json.loads((folder / "manifest.json").read_text())
        case = manifest["case"]
        if manifest["input_values"].get("do_sample"):
            # a sampled case's outputs depend on the official random generator: a black box cannot reproduce them
            # (its processed scores are checked step by step through intermediates, docs/options.md)
            print(f"{case}: skipped, a sampled case cannot be judged from outputs alone", file=sys.stderr)
            continue
        tensors = run(folder, args.checkpoint, args.decoder_scale, args.extra_frames)
        target = args.output if args.output.suffix == ".safetensors" else args.output / f"{case}.safetensors"
        target.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(target), metadata={"case": case, "port": "examples/blackbox_port"})


if __name__ == "__main__":
    main()
