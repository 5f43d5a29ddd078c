#!/usr/bin/env python3
"""A stand-in for a port of the Qwen3-TTS codec decoder to another runtime (Candle, ggml, MLX...).

It plays the part of a port that was written without this framework in mind:

* it reads the case's inputs from what `conformance export` wrote (`<export>/<case>/inputs.safetensors`)
  and the official checkpoint (bf16 safetensors), like a real port would;
* it names its modules its own way (`dec.stage1.res0.c1`, `dec.xf.0.ffn.w2`, `dec.rvq.semantic.book0`)
  and its tensors `<module>.out@<call>` (`.out0`, `.out1` for several outputs);
* it keeps the convolution stack's activations channels-last (NLC) where the official model is NCL;
* its attention has one fused qkv projection, dumped as `dec.xf.<i>.attn.qkv.out@<call>`;
* it dumps a debug tensor nobody should compare (`debug.samples`).

Its dump (safetensors) is checked through `map.toml`, which undoes all of that:

    python examples/foreign_port/port.py --export golden-export/codec_decode_short -o dump.safetensors
    conformance check --goldens goldens/qwen3_tts-tiny-float32.h5 --candidate dump:dump.safetensors \\
        --map examples/foreign_port/map.toml --cases codec_decode_short

`--perturb LAYER` (or FOREIGN_PORT_PERTURB=LAYER) scales one layer's parameters by `--scale` (default
1.05), the kind of bug a port has: the check then fails and blames that layer.

Underneath, the arithmetic is the project's NumPy implementation (impl/qwen3_tts), tapped so this
program sees every module call; only the naming and layouts are the "port's". It needs numpy and
safetensors, never torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

try:
    from impl.qwen3_tts import nn
    from impl.qwen3_tts.codec import decode_codes, load_codec
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from impl.qwen3_tts import nn
    from impl.qwen3_tts.codec import decode_codes, load_codec

# The port's module names, from the official module paths (first match wins). A real port has these
# names in its source; this one derives them so it can sit on top of the official-path implementation.
_CONV = r"(?P<inner>\.conv)?$"
PORT_NAMES: list[tuple[str, str]] = [
    (r"^speech_tokenizer:decode$", "codec.decode"),
    (r"^speech_tokenizer\.decoder:chunked_decode$", "dec.chunked"),
    (r"^speech_tokenizer\.decoder$", "dec"),
    (r"^speech_tokenizer\.decoder\.quantizer:decode$", "dec.rvq"),
    (r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest):decode$", "dec.rvq.{s}"),
    (r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest)\.vq:decode$", "dec.rvq.{s}.vq"),
    (r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest)\.vq\.layers\.(\d+):decode$", "dec.rvq.{s}.book{2}"),
    (
        r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest)\.vq\.layers\.(\d+)\._codebook:decode$",
        "dec.rvq.{s}.book{2}.embed",
    ),
    (
        r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest)\.vq\.layers\.(\d+)\.project_out$",
        "dec.rvq.{s}.book{2}.proj",
    ),
    (r"^speech_tokenizer\.decoder\.quantizer\.rvq_(first|rest)\.output_proj$", "dec.rvq.{s}.proj_out"),
    (r"^speech_tokenizer\.decoder\.pre_conv" + _CONV, "dec.pre_conv{k}"),
    (r"^speech_tokenizer\.decoder\.pre_transformer$", "dec.xf"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.input_proj$", "dec.xf.proj_in"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.output_proj$", "dec.xf.proj_out"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.norm$", "dec.xf.norm_out"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.rotary_emb$", "dec.xf.rope"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.layers\.(\d+)$", "dec.xf.{1}"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.layers\.(\d+)\.self_attn\.[qkv]_proj$", "dec.xf.{1}.attn.qkv"),
    (r"^speech_tokenizer\.decoder\.pre_transformer\.layers\.(\d+)\.(.+)$", "dec.xf.{1}.{layer}"),
    (r"^speech_tokenizer\.decoder\.upsample\.(\d+)\.0" + _CONV, "dec.up{1}.tconv{k}"),
    (r"^speech_tokenizer\.decoder\.upsample\.(\d+)\.1$", "dec.up{1}.cnx"),
    (r"^speech_tokenizer\.decoder\.upsample\.(\d+)\.1\.(.+)$", "dec.up{1}.cnx.{cnx}"),
    (r"^speech_tokenizer\.decoder\.decoder\.0" + _CONV, "dec.conv_in{k}"),
    (r"^speech_tokenizer\.decoder\.decoder\.([1-4])$", "dec.stage{-1}"),
    (r"^speech_tokenizer\.decoder\.decoder\.([1-4])\.block\.0$", "dec.stage{-1}.snake"),
    (r"^speech_tokenizer\.decoder\.decoder\.([1-4])\.block\.1" + _CONV, "dec.stage{-1}.up{k}"),
    (r"^speech_tokenizer\.decoder\.decoder\.([1-4])\.block\.([2-4])$", "dec.stage{-1}.res{-2}"),
    (r"^speech_tokenizer\.decoder\.decoder\.([1-4])\.block\.([2-4])\.(.+)$", "dec.stage{-1}.res{-2}.{res}"),
    (r"^speech_tokenizer\.decoder\.decoder\.5$", "dec.snake_out"),
    (r"^speech_tokenizer\.decoder\.decoder\.6" + _CONV, "dec.conv_out{k}"),
]
LAYER = {"input_layernorm": "ln1", "self_attn": "attn", "self_attn.q_norm": "attn.qn", "self_attn.k_norm": "attn.kn",
         "self_attn.o_proj": "attn.o", "self_attn_layer_scale": "ls1", "post_attention_layernorm": "ln2", "mlp": "ffn",
         "mlp.gate_proj": "ffn.w1", "mlp.act_fn": "ffn.act", "mlp.up_proj": "ffn.w3", "mlp.down_proj": "ffn.w2",
         "mlp_layer_scale": "ls2"}  # fmt: skip
CNX = {"dwconv": "dw", "dwconv.conv": "dw.kernel", "norm": "ln", "pwconv1": "pw1", "act": "act", "pwconv2": "pw2"}
RES = {"act1": "a1", "conv1": "c1", "conv1.conv": "c1.kernel", "act2": "a2", "conv2": "c2", "conv2.conv": "c2.kernel"}
# The port keeps these modules' activations channels-last: (batch, length, channels).
CHANNELS_LAST = re.compile(r"^dec(\.chunked|\.rvq(\.\w+(\.vq|\.book\d+|\.proj_out)?)?|\.pre_conv.*|\.up\d+\.tconv.*"
                           r"|\.up\d+\.cnx(\.dw.*)?|\.conv_in.*|\.stage\d+.*|\.snake_out|\.conv_out.*)?$")  # fmt: skip


def port_name(key: str) -> str | None:
    for pattern, template in PORT_NAMES:
        found = re.match(pattern, key)
        if found is None:
            continue
        groups = found.groups()
        out = template
        if "{s}" in out:  # the port calls the split quantizer's halves by what they hold
            out = out.replace("{s}", {"first": "semantic", "rest": "acoustic"}[groups[0]])
        out = out.replace("{k}", ".kernel" if found.groupdict().get("inner") else "")
        if "{-1}" in out:  # the official decoder.decoder list starts with the input conv: stage i is entry i + 1
            out = out.replace("{-1}", str(int(groups[0]) - 1))
        if "{-2}" in out:  # residual units follow the snake and the upsampling conv: unit j is block j + 2
            out = out.replace("{-2}", str(int(groups[1]) - 2))
        for table, name in ((LAYER, "{layer}"), (CNX, "{cnx}"), (RES, "{res}")):
            if name in out:
                out = out.replace(name, table[groups[-1]])
        for i, group in enumerate(groups, start=1):
            out = out.replace(f"{{{i}}}", group or "")
        return out
    return None


class Dumper:
    """The port's own tensor dump: every module's outputs under the port's names and layouts."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = defaultdict(int)
        self.stack: dict[str, list[int]] = defaultdict(list)
        self.qkv: dict[tuple[str, int], dict[str, np.ndarray]] = defaultdict(dict)
        self.dtype: Any = np.float32  # the dtype the port writes its floating-point tensors in

    def __call__(self, key: str, phase: str, args: tuple, kwargs: dict, outputs: Any) -> None:
        if phase == "call":
            self.stack[key].append(self.counts[key])
            self.counts[key] += 1
            return
        call = self.stack[key].pop()
        name = port_name(key)
        if name is None:
            raise SystemExit(f"port.py: no port name for module {key}")
        if name.endswith(".attn.qkv"):  # the port's fused projection: q, k and v concatenated on channels
            parts = self.qkv[(name, call)]
            parts[key.rsplit(".", 1)[1][0]] = outputs
            if len(parts) == 3:
                fused = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=-1)
                self.tensors[f"{name}.out@{call}"] = fused.astype(self.dtype)
            return
        if name == "codec.decode":
            self.tensors[f"codec.wave@{call}"] = outputs["audio_values"][0].astype(self.dtype)
            return
        if isinstance(outputs, dict):
            outputs = outputs["last_hidden_state"]
        if isinstance(outputs, np.ndarray):
            self._put(f"{name}.out@{call}", name, outputs)
        else:
            for i, item in enumerate(outputs):
                if isinstance(item, np.ndarray):
                    self._put(f"{name}.out{i}@{call}", name, item)

    def _put(self, tensor: str, module: str, value: np.ndarray) -> None:
        if value.ndim == 3 and CHANNELS_LAST.match(module):
            value = np.swapaxes(value, 1, 2)  # NCL -> NLC
        self.tensors[tensor] = np.ascontiguousarray(value, dtype=self.dtype if value.dtype.kind == "f" else None)


def perturb(root: Any, layer: str, scale: float) -> None:
    """Scale the parameters of the port's layer `layer` (a port bug in one layer)."""
    for path, module in root.named_modules():
        if port_name(path) == layer:
            params = [p for p in module.params if isinstance(getattr(module, p, None), np.ndarray)]
            if not params:
                raise SystemExit(f"port.py: layer {layer} has no parameters of its own")
            for param in params:
                setattr(module, param, getattr(module, param) * np.asarray(scale, dtype=getattr(module, param).dtype))
            return
    raise SystemExit(f"port.py: no layer named {layer}")


def store_weights_in_float16(root: Any) -> None:
    """The port keeps every weight in float16 (its tensor library's storage), computing in float32."""
    for _, module in root.named_modules():
        for param in module.params:
            value = getattr(module, param, None)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                setattr(module, param, value.astype(np.float16).astype(np.float32))


def checkpoint_of(case_dir: Path, manifest: dict[str, Any]) -> Path:
    """The speech tokenizer checkpoint the golden was recorded with (its provenance, relative to the golden)."""
    index = json.loads((case_dir.parent / "manifest.json").read_text())
    golden = Path(index["goldens"]["path"])
    recorded = Path(manifest["provenance"]["checkpoint"]["speech_tokenizer"])
    return recorded if recorded.is_absolute() else golden.parent / recorded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, type=Path, help="the case folder `conformance export` wrote")
    parser.add_argument("-o", "--output", required=True, type=Path, help="dump file to write (.safetensors)")
    parser.add_argument("--checkpoint", type=Path, help="speech tokenizer folder (default: from the export)")
    parser.add_argument("--perturb", default=os.environ.get("FOREIGN_PORT_PERTURB"), metavar="LAYER",
                        help="scale this layer's parameters (e.g. dec.stage1.res0.a1)")  # fmt: skip
    parser.add_argument("--scale", type=float, default=float(os.environ.get("FOREIGN_PORT_SCALE", "1.05")))
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="float16: weights stored in float16 and tensors dumped in float16 (a half-precision port)")  # fmt: skip
    args = parser.parse_args(argv)

    manifest = json.loads((args.export / "manifest.json").read_text())
    inputs = load_file(str(args.export / manifest["files"]["inputs"]))
    codes = inputs["codes"]  # (batch 1, frames, quantizers)
    root = load_codec(args.checkpoint or checkpoint_of(args.export, manifest), np.float32)
    if args.perturb:
        perturb(root, args.perturb, args.scale)
    if args.dtype == "float16":
        store_weights_in_float16(root)
    dumper = Dumper()
    dumper.dtype = np.dtype(args.dtype)
    with nn.tapping(dumper):
        wave = decode_codes(root, codes[0])
    dumper.tensors["debug.samples"] = np.array([wave.shape[0]], dtype=np.int64)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file(dumper.tensors, str(args.output), metadata={"case": manifest["case"], "producer": "foreign_port example"})
    print(f"port.py: {manifest['case']}: {len(dumper.tensors)} tensors -> {args.output}"
          + (f" (layer {args.perturb} scaled by {args.scale})" if args.perturb else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
