"""The official model itself as a check candidate (needs torch and qwen-tts).

It lets the engine be tested and used before any port exists: `official:float64` against a float32
golden measures the official model's own precision noise; `official:float32` against the float32
golden is bit-exact, and with `perturb=<parameter>` one weight is scaled by (1 + scale), so a check must
blame exactly the module that owns it.

Spec: `official[:float32|float64|<precision>][:perturb=<parameter name>[@scale]]`, e.g.
`official:float32:perturb=talker.model.layers.1.mlp.down_proj.weight@1e-3`. A precision of
conformance/precisions.py runs the official model itself at it: `official:bfloat16`, `official:float16` (compute
in that dtype, weights cast), `official:q8_0`, `official:q4_0`, `official:f16-weights` (weights stored in that
format, float32 compute): a candidate right by construction at that precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...compare.candidate import Candidate, NotCovered, Sink, check_call
from ...compare.provenance import canonical_name, imported_versions, package_label, package_provenance
from ...errors import UsageError
from ...precisions import PRECISIONS
from ...store.reader import Case, GoldenStore, ObjectValue
from ...store.schema import CallRecord
from .impl_binding import checkpoint_folder

OFFICIAL_IMPORT = "qwen_tts"  # what `--candidate official` imports: whichever distribution provides it here


def parse_spec(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if parts[0] != "official":
        raise UsageError(f"not an official candidate spec: {spec!r}")
    options: dict[str, Any] = {"dtype": "float32", "perturb": None, "scale": 1e-3}
    for part in parts[1:]:
        if part == "float64" or part in PRECISIONS:
            options["dtype"] = part
        elif part.startswith("perturb="):
            target = part[len("perturb=") :]
            name, _, scale = target.partition("@")
            options["perturb"] = name
            if scale:
                try:
                    options["scale"] = float(scale)
                except ValueError:
                    raise UsageError(f"bad perturbation scale {scale!r} in {spec!r}") from None
        else:
            raise UsageError(f"unknown option {part!r} in candidate spec {spec!r} "
                             f"(official[:float64|{'|'.join(PRECISIONS)}][:perturb=<parameter>[@scale]])")  # fmt: skip
    return options


class OfficialCandidate(Candidate):
    name = "official"

    def __init__(self, dtype: str = "float32", perturb: str | None = None, scale: float = 1e-3,
                 checkpoint: Path | None = None, attn_implementation: str = "eager", threads: int = 1) -> None:  # fmt: skip
        self.dtype = dtype
        self.perturb = perturb
        self.scale = scale
        self.checkpoint = checkpoint
        self.attn = attn_implementation
        self.threads = threads
        self._models: dict[str, Any] = {}
        # the dtype the models compute in: a weight-format precision (q8_0...) computes in float32
        self.compute = PRECISIONS[dtype].compute if dtype in PRECISIONS else dtype
        self.roots: dict[str, Any] = {}
        self.models: Any = None
        self.recorded: tuple[str, str] | None = None  # (official_package, official_version) of the golden

    @property
    def description(self) -> str:
        """What ran: the distribution that provided `qwen_tts`, called official only when it is the one the
        golden was recorded with, and the libraries it ran with."""
        package = package_provenance(OFFICIAL_IMPORT)
        what = package_label(package)
        if self.recorded is not None:
            name, version = self.recorded
            same = package.get("distribution") and canonical_name(str(package["distribution"])) == canonical_name(
                name) and package.get("version") == version  # fmt: skip
            what = f"official {what}" if same else f"{what}, not the recorded {name} {version}"
        libraries = [f"{lib} {v}" for lib, v in imported_versions(("transformers", "torch")).items() if v]
        text = f"{what} ({', '.join([*libraries, self.dtype])})"
        if self.perturb:
            text += f", {self.perturb} scaled by 1{self.scale:+g}"
        return text

    def provenance(self) -> dict[str, Any]:
        package = package_provenance(OFFICIAL_IMPORT)
        libraries = imported_versions(("transformers", "torch", "numpy"))
        stated_package = package.get("distribution") or f"{package_label(package)} (no installed distribution)"
        out: dict[str, Any] = {
            "kind": self.name, "label": self.description, "package": package, "libraries": libraries,
            "dtype": self.dtype, "attn_implementation": self.attn,
            "compared_with_golden": {"official_package": stated_package, "official_version": package.get("version"),
                                     "transformers": libraries["transformers"], "torch": libraries["torch"]},
        }  # fmt: skip
        if self.perturb:
            out["perturbation"] = {"parameter": self.perturb, "scale": self.scale}
        return out

    def prepare(self, store: GoldenStore, case: Case) -> None:
        if case.provenance.get("official_package"):  # first: the label needs it even when loading fails
            self.recorded = (str(case.provenance["official_package"]), str(case.provenance.get("official_version")))
        import torch

        from .cases import CASES_BY_NAME
        from .record import CheckpointSource, OfficialModels

        torch.set_num_threads(int(case.provenance.get("threads", self.threads)))
        model = case.provenance.get("model", "codec")
        name = "speech_tokenizer" if model == "codec" else model
        folder = checkpoint_folder(store, case, name, self.checkpoint)
        key = str(folder)
        if key not in self._models:
            self._models[key] = OfficialModels(CheckpointSource.from_path(folder), self.compute, self.attn)
        self.models = self._models[key]
        spec = CASES_BY_NAME.get(case.name)
        self.spec = spec
        hooks = spec.hooks if spec is not None else (("codec",) if model == "codec" else ("tts", "codec"))
        from .cases import CaseSpec

        probe = CaseSpec(case.name, case.provenance.get("family", ""), "", model, hooks, lambda m, io: None)
        self.roots = self.models.roots(probe)
        if model != "codec":
            self.roots.setdefault("speech_tokenizer", self.models.tts(model).model.speech_tokenizer.model)
        if self.dtype in PRECISIONS and PRECISIONS[self.dtype].weights:
            from ...capture.twins import apply_weight_format

            apply_weight_format(self.roots, PRECISIONS[self.dtype])
        self._apply_perturbation()

    def _apply_perturbation(self) -> None:
        if not self.perturb:
            return
        import torch

        for prefix, root in self.roots.items():
            name = self.perturb
            if prefix:
                if not name.startswith(prefix + "."):
                    continue
                name = name[len(prefix) + 1 :]
            params = dict(root.named_parameters())
            if name in params:
                param = params[name]
                if not getattr(param, "_conformance_perturbed", False):
                    with torch.no_grad():
                        param.mul_(1 + self.scale)
                    param._conformance_perturbed = True  # type: ignore[attr-defined]
                return
        raise UsageError(f"no parameter {self.perturb!r} in the official model of this case")

    def _precision(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == "float64":
            import torch

            from .precision import clean_precision

            return clean_precision(torch.float64)
        return contextlib.nullcontext()

    # -- isolated -------------------------------------------------------------------------------------
    def _resolve(self, key: str) -> Any:
        from .checkpoints import official

        if key == ":mel_spectrogram":  # looked up when called: clean_precision swaps the module attribute
            return lambda *a, **k: official().tts_modeling.mel_spectrogram(*a, **k)
        path, _, method = key.partition(":")
        path = "" if path == "(root)" else path
        for prefix, root in self.roots.items():
            if prefix and not (path == prefix or path.startswith(prefix + ".")):
                continue
            rest = path[len(prefix) + 1 :] if prefix and path != prefix else ("" if prefix else path)
            try:
                module = root.get_submodule(rest) if rest else root
            except AttributeError:
                continue
            return getattr(module, method) if method else module
        return None

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        import torch

        from ...capture.recorder import to_numpy_tree

        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        from ...store.tree import numpy_roles

        dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[self.compute]  # fmt: skip
        keep = numpy_roles(call.decoded_spec())  # inputs the official code took as numpy arrays stay numpy
        torch_args = [a if f"args/{i}" in keep else _to_torch(a, dtype) for i, a in enumerate(args)]
        torch_kwargs = {k: v if f"kwargs/{k}" in keep else _to_torch(v, dtype, name=k) for k, v in kwargs.items()}
        check_call(target, torch_args, torch_kwargs)
        from .impl_binding import sampled_tokens
        from .sampling import replay_multinomial

        tokens = sampled_tokens(case, call, kwargs)  # a sampling call draws the golden's tokens (teacher forcing)
        replay = replay_multinomial(tokens) if tokens is not None else contextlib.nullcontext()
        with torch.no_grad(), self._precision(), replay:
            outputs = target(*torch_args, **torch_kwargs)
        return to_numpy_tree(outputs)

    # -- chained --------------------------------------------------------------------------------------
    def can_chain(self, case: Case) -> bool:
        return self.spec is not None

    def run_chained(self, case: Case, sink: Sink) -> None:
        import torch

        from ...capture.io import CaseIO

        if self.spec is None:
            raise NotCovered(case.name)
        codec_hooked = "codec" in self.spec.hooks or "codec_encoder" in self.spec.hooks
        roots = {k: v for k, v in self.roots.items() if k != "speech_tokenizer" or codec_hooked}
        io = CaseIO(str(case.provenance.get("size", "tiny")))
        from .impl_binding import replay_stream
        from .sampling import replay_multinomial

        names = case.input_names()  # a sampled case draws the golden's tokens (teacher forcing), as the impl does
        flags = [bool(case.input(n)) if n in names else False for n in ("do_sample", "subtalker_dosample")]
        tokens = replay_stream(case, *flags)
        replay = replay_multinomial(tokens) if tokens is not None else contextlib.nullcontext()
        with self._precision(), torch.no_grad(), _tap(roots, sink, self.models.excluded(self.spec)), replay:
            self.spec.run(self.models, io)


@contextlib.contextmanager
def _tap(roots: dict[str, Any], sink: Sink, exclude: list[str]) -> Iterator[None]:
    from ...capture.recorder import TorchTap
    from .record import function_specs, method_specs

    with TorchTap(roots, sink, exclude=exclude, methods=method_specs(roots), functions=function_specs()):
        yield


def _to_torch(value: Any, dtype: Any, name: str = "") -> Any:
    """Golden inputs (numpy and plain values) as the torch values the official module expects."""
    import torch

    if isinstance(value, np.ndarray):
        tensor = torch.from_numpy(value if value.flags.c_contiguous else np.ascontiguousarray(value))
        tensor = tensor.reshape(value.shape)  # ascontiguousarray would turn a 0-d index into 1-d
        # Always a copy in torch's own (64-byte aligned) memory, as in the recorded run: some CPU kernels
        # take a different path, with different rounding, on data numpy allocated at another alignment.
        return tensor.to(dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
    if isinstance(value, dict) and name == "past_key_values" and "layers" in value:
        return _cache(value, dtype)
    if isinstance(value, dict):
        return {k: _to_torch(v, dtype, k) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_to_torch(v, dtype) for v in value)
    if isinstance(value, list):
        return [_to_torch(v, dtype) for v in value]
    if isinstance(value, ObjectValue):
        return None
    return value


def _cache(value: dict[str, Any], dtype: Any) -> Any:
    """Rebuild a DynamicCache from the recorded {"layers": [{"keys", "values"}]}."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    cache = DynamicCache()
    for index, layer in enumerate(value.get("layers", [])):
        keys, values = layer.get("keys"), layer.get("values")
        if isinstance(keys, np.ndarray) and isinstance(values, np.ndarray) and keys.size:
            cache.update(
                torch.from_numpy(keys).to(dtype, copy=True), torch.from_numpy(values).to(dtype, copy=True), index
            )
        else:
            while len(cache.layers) <= index:
                cache.layers.append(DynamicLayer())
    return cache
