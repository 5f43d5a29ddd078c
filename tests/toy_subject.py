"""A toy subject for the generic rooms' tests: a two-layer causal language model written here in torch (token and
position embeddings, pre-norm blocks of attention and a GELU MLP, a final norm, an untied head), with its own tiny
seeded checkpoint, two cases, the official candidate (the torch model, hooked) and a NumPy candidate built from
impl/common. It is a Subject like Qwen3-TTS, registered at run time (`register()`), and recorded by the same
generic session; the engine, report and port tests judge it with the product's own code and policy.

Tokens are 1-D: `:generate#0/outputs/0` holds the generated ids, axis "position"; position p was chosen by the
head's call p (`lm_head#p`) inside the model's forward call p (`(root)#p`, the whole-model step).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance import subjects
from conformance.capture.io import CaseIO, RecordedIO
from conformance.compare.candidate import Candidate, NotCovered, Sink, check_call
from conformance.errors import StoreError, UsageError
from conformance.store import Case, GoldenStore
from conformance.store.schema import CallRecord

NAME = "toy_lm"
OFFICIAL = subjects.OfficialPackage(distribution="toy-lm-official", version="1.0", import_name="tests.toy_subject")
CONFIG = {"vocab_size": 40, "hidden_size": 16, "num_heads": 2, "num_layers": 2, "intermediate_size": 32,
          "max_positions": 32, "eps": 1e-5}  # fmt: skip
SEED = 7
GENERATE = (":generate", 0, "outputs/0")


# -- the official model, in torch -----------------------------------------------------------------------------


def torch_model(config: dict[str, Any] = CONFIG) -> Any:
    """The toy LM's torch module tree (its parameters as torch initialises them)."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            hidden = config["hidden_size"]
            self.heads = config["num_heads"]
            self.q_proj, self.k_proj, self.v_proj = (nn.Linear(hidden, hidden) for _ in range(3))
            self.o_proj = nn.Linear(hidden, hidden)

        def forward(self, hidden_states: Any, attention_mask: Any = None) -> Any:
            b, t, c = hidden_states.shape
            d = c // self.heads
            q, k, v = (proj(hidden_states).view(b, t, self.heads, d).transpose(1, 2)
                       for proj in (self.q_proj, self.k_proj, self.v_proj))  # fmt: skip
            scores = q @ k.transpose(-1, -2) / math.sqrt(d) + attention_mask  # (B, H, T, T)
            weights = torch.softmax(scores, dim=-1)
            return self.o_proj((weights @ v).transpose(1, 2).reshape(b, t, c))

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up_proj = nn.Linear(config["hidden_size"], config["intermediate_size"])
            self.act = nn.GELU()
            self.down_proj = nn.Linear(config["intermediate_size"], config["hidden_size"])

        def forward(self, x: Any) -> Any:
            return self.down_proj(self.act(self.up_proj(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_norm = nn.LayerNorm(config["hidden_size"], eps=config["eps"])
            self.self_attn = Attention()
            self.post_norm = nn.LayerNorm(config["hidden_size"], eps=config["eps"])
            self.mlp = MLP()

        def forward(self, hidden_states: Any, attention_mask: Any = None) -> Any:
            hidden_states = hidden_states + self.self_attn(
                self.input_norm(hidden_states), attention_mask=attention_mask
            )
            return hidden_states + self.mlp(self.post_norm(hidden_states))

    class ToyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
            self.embed_positions = nn.Embedding(config["max_positions"], config["hidden_size"])
            self.layers = nn.ModuleList(Block() for _ in range(config["num_layers"]))
            self.norm = nn.LayerNorm(config["hidden_size"], eps=config["eps"])
            self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

        def forward(self, input_ids: Any) -> Any:
            t = input_ids.shape[-1]
            dtype = self.embed_tokens.weight.dtype
            hidden = self.embed_tokens(input_ids) + self.embed_positions(torch.arange(t))
            mask = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]  # (1, 1, T, T)
            for layer in self.layers:
                hidden = layer(hidden, attention_mask=mask)
            return self.lm_head(self.norm(hidden))  # (B, T, V)

        def generate(self, input_ids: Any, max_new_tokens: int) -> Any:
            ids = input_ids
            for _ in range(max_new_tokens):
                logits = self(ids)
                ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=-1)
            return ids[0, input_ids.shape[-1] :]  # (max_new_tokens,)

    return ToyLM()


def build_checkpoint(folder: Path, seed: int = SEED) -> Path:
    """The toy's seeded checkpoint: config.json and model.safetensors (float32), built once."""
    import torch
    from safetensors.torch import save_file

    if (folder / "model.safetensors").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = torch_model()
    with torch.no_grad():  # weights large enough that tokens have clear margins
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * (1.0 if "norm" in name and name.endswith("weight") else 0.5))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=1))
    return folder


def load_torch(folder: Path, dtype: str = "float32") -> Any:
    import torch
    from safetensors.torch import load_file

    model = torch_model(json.loads((folder / "config.json").read_text()))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to({"float32": torch.float32, "float64": torch.float64}[dtype]).eval()


# -- cases ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyCase:
    name: str
    family: str
    description: str
    run: Callable[[Any, CaseIO], None]
    model: str = "lm"
    params: dict[str, Any] = field(default_factory=dict)


def run_prefill(model: Any, io: CaseIO) -> None:
    import torch

    ids = io.input("input_ids", np.array([[3, 14, 15, 9, 26, 5]], dtype=np.int64))
    io.output("logits", model(torch.from_numpy(ids)).detach().numpy())


def run_greedy(model: Any, io: CaseIO) -> None:
    import torch

    ids = io.input("input_ids", np.array([[1, 7, 2]], dtype=np.int64))
    steps = io.input("max_new_tokens", 6)
    io.output("tokens", model.generate(torch.from_numpy(ids), max_new_tokens=steps).numpy())


CASES = (
    ToyCase(
        "toy_prefill", "prefill", "One forward pass over a six-token prompt: logits of every position.", run_prefill
    ),
    ToyCase("toy_greedy", "generation", "Greedy decoding of six tokens after a three-token prompt.", run_greedy),
)
CASES_BY_NAME = {case.name: case for case in CASES}


# -- the recording session's half -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ToyRecording:
    subject = NAME
    official = OFFICIAL
    seed = SEED

    def __init__(self, *, size: str = "tiny", checkpoint: str | Path | None = None, seed: int | None = None,
                 attn_implementation: str = "eager") -> None:  # fmt: skip
        if checkpoint is None:
            raise UsageError("the toy subject records from a checkpoint folder (--checkpoint)")
        self.folder = Path(checkpoint)
        self.size = size
        self.label = str(checkpoint)

    def prepare(self, cases: Sequence[ToyCase]) -> None:
        build_checkpoint(self.folder)

    def runnable(self, case: ToyCase) -> str | None:
        return None

    def load(self, dtype: str) -> Any:
        return load_torch(self.folder, "float64" if dtype == "float64" else "float32")

    def roots(self, models: Any, case: ToyCase) -> dict[str, Any]:
        return {"": models}

    def excluded(self, case: ToyCase) -> list[str]:
        return []

    def methods(self, roots: dict[str, Any]) -> list[Any]:
        from conformance.capture.recorder import MethodSpec

        return [MethodSpec("", "generate", False)]  # its output is argmax decisions: not re-run by the oracle

    def functions(self) -> list[Any]:
        return []

    def oracle_functions(self) -> dict[str, Callable[..., Any]]:
        return {}

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # the toy computes in its parameters' dtype everywhere

    def run(self, models: Any, case: ToyCase, io: CaseIO) -> None:
        case.run(models, io)

    def provenance(self, models: Any, case: ToyCase, roots: dict[str, Any], out: Path) -> dict[str, Any]:
        return {"checkpoint": {"lm": str(self.folder.resolve())},
                "weights_sha256": {"lm": {"model.safetensors": _sha256(self.folder / "model.safetensors")}},
                "config": {"lm": CONFIG}}  # fmt: skip

    def software(self) -> dict[str, Any]:
        return {OFFICIAL.distribution: OFFICIAL.version}


# -- candidates ---------------------------------------------------------------------------------------------------


def checkpoint_of(store: GoldenStore, case: Case, override: Path | None) -> Path:
    folder = override or Path(case.provenance.get("checkpoint", {}).get("lm", ""))
    if not (folder / "config.json").exists():
        raise StoreError(f"the checkpoint of case {case.name!r} is not at {folder}", path=store.path)
    return folder


def _spec_options(spec: str, kind: str) -> dict[str, Any]:
    options: dict[str, Any] = {"dtype": None, "perturb": None, "scale": 1e-3}
    for part in spec.split(":")[1:]:
        if part in ("float32", "float64"):
            options["dtype"] = part
        elif part.startswith("perturb=") and kind == "official":
            name, _, scale = part[len("perturb=") :].partition("@")
            options["perturb"], options["scale"] = name, float(scale) if scale else 1e-3
        else:
            raise UsageError(f"unknown option {part!r} in candidate spec {spec!r}")
    return options


class ToyOfficial(Candidate):
    """The toy's torch model as a candidate: isolated calls on golden inputs, chained runs through a TorchTap;
    `perturb` scales one parameter by (1 + scale)."""

    name = "official"

    def __init__(self, dtype: str | None = None, perturb: str | None = None, scale: float = 1e-3,
                 checkpoint: Path | None = None) -> None:  # fmt: skip
        self.dtype = dtype or "float32"
        self.perturb, self.scale, self.checkpoint = perturb, scale, checkpoint
        self.model: Any = None

    @property
    def description(self) -> str:
        return f"toy official ({self.dtype})" + (f", {self.perturb} scaled by 1{self.scale:+g}" if self.perturb else "")

    def prepare(self, store: GoldenStore, case: Case) -> None:
        import torch

        torch.set_num_threads(int(case.provenance.get("threads", 1)))  # bit for bit only at the recorded count
        if self.model is None:
            self.model = load_torch(checkpoint_of(store, case, self.checkpoint), self.dtype)
            if self.perturb:
                params = dict(self.model.named_parameters())
                if self.perturb not in params:
                    raise UsageError(f"no parameter {self.perturb!r} in the toy model")
                with torch.no_grad():
                    params[self.perturb].mul_(1 + self.scale)

    def _resolve(self, key: str) -> Any:
        path, _, method = key.partition(":")
        path = "" if path == "(root)" else path
        try:
            module = self.model.get_submodule(path) if path else self.model
        except AttributeError:
            return None
        return getattr(module, method) if method else module

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        import torch

        from conformance.capture.recorder import to_numpy_tree

        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        dtype = {"float32": torch.float32, "float64": torch.float64}[self.dtype]

        def to_torch(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                tensor = torch.from_numpy(np.array(value))
                return tensor.to(dtype) if tensor.is_floating_point() else tensor
            return value

        torch_args = [to_torch(a) for a in args]
        torch_kwargs = {k: to_torch(v) for k, v in kwargs.items()}
        check_call(target, torch_args, torch_kwargs)
        with torch.no_grad():
            return to_numpy_tree(target(*torch_args, **torch_kwargs))

    def can_chain(self, case: Case) -> bool:
        return case.name in CASES_BY_NAME

    def run_chained(self, case: Case, sink: Sink) -> None:
        import torch

        from conformance.capture.recorder import MethodSpec, TorchTap

        io = RecordedIO(case, "tiny")
        with torch.no_grad(), TorchTap({"": self.model}, sink, methods=[MethodSpec("", "generate", False)]):
            CASES_BY_NAME[case.name].run(self.model, io)


def numpy_model(config: dict[str, Any] = CONFIG) -> Any:
    """The toy LM in NumPy, from impl/common's blocks, at the official module paths (no map needed)."""
    from impl.common import functional as F
    from impl.common.layers import GELU, Embedding, LayerNorm, Linear
    from impl.common.nn import Module, tapped

    hidden, heads = config["hidden_size"], config["num_heads"]

    class Attention(Module):
        def __init__(self) -> None:
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (Linear(hidden, hidden) for _ in range(4))

        def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
            b, t, c = hidden_states.shape
            d = c // heads
            q, k, v = (proj(hidden_states).reshape(b, t, heads, d).transpose(0, 2, 1, 3)  # (B, H, T, D)
                       for proj in (self.q_proj, self.k_proj, self.v_proj))  # fmt: skip
            scale = np.asarray(math.sqrt(d), dtype=hidden_states.dtype)
            scores = q @ k.transpose(0, 1, 3, 2) / scale + attention_mask  # (B, H, T, T)
            return self.o_proj((F.softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, t, c))

    class MLP(Module):
        def __init__(self) -> None:
            self.up_proj = Linear(hidden, config["intermediate_size"])
            self.act = GELU()
            self.down_proj = Linear(config["intermediate_size"], hidden)

        def forward(self, x: np.ndarray) -> np.ndarray:
            return self.down_proj(self.act(self.up_proj(x)))

    class Block(Module):
        def __init__(self) -> None:
            self.input_norm = LayerNorm(hidden, config["eps"])
            self.self_attn = Attention()
            self.post_norm = LayerNorm(hidden, config["eps"])
            self.mlp = MLP()

        def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
            hidden_states = hidden_states + self.self_attn(
                self.input_norm(hidden_states), attention_mask=attention_mask
            )
            return hidden_states + self.mlp(self.post_norm(hidden_states))

    class ToyLM(Module):
        def __init__(self) -> None:
            self.embed_tokens = Embedding(config["vocab_size"], hidden)
            self.embed_positions = Embedding(config["max_positions"], hidden)
            self.layers = [Block() for _ in range(config["num_layers"])]
            self.norm = LayerNorm(hidden, config["eps"])
            self.lm_head = Linear(hidden, config["vocab_size"], bias=False)

        def forward(self, input_ids: np.ndarray) -> np.ndarray:
            t = input_ids.shape[-1]
            hidden_states = self.embed_tokens(input_ids) + self.embed_positions(np.arange(t))
            dtype = hidden_states.dtype
            mask = np.triu(np.full((t, t), np.finfo(dtype).min, dtype=dtype), 1)[None, None]  # (1, 1, T, T)
            for layer in self.layers:
                hidden_states = layer(hidden_states, attention_mask=mask)
            return self.lm_head(self.norm(hidden_states))  # (B, T, V)

        @tapped
        def generate(self, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
            ids = np.asarray(input_ids, dtype=np.int64)
            for _ in range(int(max_new_tokens)):
                logits = self(ids)
                ids = np.concatenate([ids, logits[:, -1].argmax(-1)[:, None].astype(np.int64)], axis=-1)
            return ids[0, input_ids.shape[-1] :]

    return ToyLM().bind()


class ToyImpl(Candidate):
    """The NumPy toy as a candidate: components at the official paths, reported to the engine by impl/common's tap."""

    name = "impl"

    def __init__(self, dtype: str | None = None, checkpoint: Path | None = None) -> None:
        self.forced_dtype, self.checkpoint = dtype, checkpoint
        self.model: Any = None

    def prepare(self, store: GoldenStore, case: Case) -> None:
        from impl.common.weights import load_checkpoint_tensors, load_weights

        self.dtype = self.forced_dtype or case.dtype
        if self.model is None:
            self.model = self.build()
            load_weights(self.model, load_checkpoint_tensors(checkpoint_of(store, case, self.checkpoint)),
                         np.float64 if self.dtype == "float64" else np.float32)  # fmt: skip

    def build(self) -> Any:
        """The module tree (a port with a bug overrides this)."""
        return numpy_model()

    def _resolve(self, key: str) -> Any:
        path, _, method = key.partition(":")
        try:
            module = self.model.get("" if path == "(root)" else path)
        except (AttributeError, IndexError):
            return None
        return getattr(module, method, None) if method else module

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        check_call(target, args, kwargs)
        return target(*args, **kwargs)

    def can_chain(self, case: Case) -> bool:
        return case.name in CASES_BY_NAME

    def run_chained(self, case: Case, sink: Sink) -> None:
        from impl.common.nn import tapping

        inputs = {name: case.input(name) for name in case.input_names()}
        with tapping(sink):
            if "max_new_tokens" in inputs:
                self.model.generate(inputs["input_ids"], max_new_tokens=int(inputs["max_new_tokens"]))
            else:
                self.model(inputs["input_ids"])


# -- the subject ----------------------------------------------------------------------------------------------------


class ToySubject(subjects.Subject):
    name = NAME
    title = "Toy LM"
    official = OFFICIAL
    token_logits = ("lm_head",)

    def cases(self) -> Sequence[Any]:
        return CASES

    def recording(self, **options: Any) -> ToyRecording:
        return ToyRecording(**options)

    def record(self, out: str | Path, cases: Sequence[Any], **options: Any) -> Path:
        from conformance.capture.session import record

        recording = self.recording(**{k: options.pop(k) for k in ("checkpoint", "size") if k in options})
        return record(out, [(recording, list(cases))], **options)

    def checkpoints(self, folder: Path | None = None, *, size: str = "tiny", seed: int | None = None) -> Path:
        if folder is None:
            raise UsageError("the toy subject builds its checkpoint in a folder you name")
        return build_checkpoint(folder, SEED if seed is None else seed)

    def make_goldens(self, folder: Path, **options: Any) -> dict[str, Any]:
        """The toy's committed goldens, as a project would keep them: its checkpoint under checkpoints/, a float32
        store with its noise records and the float64 store it is paired with through the manifest."""
        from conformance.capture.session import record

        checkpoint = build_checkpoint(folder / "checkpoints" / NAME)
        stores = []
        for dtype in ("float32", "float64"):
            path = folder / f"{NAME}-{dtype}.h5"
            record(path, [(self.recording(checkpoint=checkpoint), list(CASES))], dtype=dtype, reference64=False,
                   command="make_goldens")  # fmt: skip
            stores.append({"path": path.name, "dtype": dtype, "sha256": _sha256(path), "bytes": path.stat().st_size,
                           "cases": [case.name for case in CASES]})  # fmt: skip
        stores[0]["float64_reference"] = stores[1]["path"]
        return {"title": self.title, "stores": stores,
                "checkpoint": {"path": f"checkpoints/{NAME}", "files": {"model.safetensors": _sha256(checkpoint / "model.safetensors")}}}  # fmt: skip

    def candidate(self, spec: str, *, checkpoint: Path | None = None) -> Candidate:
        kind = spec.split(":")[0]
        if kind == "impl":
            return ToyImpl(_spec_options(spec, kind)["dtype"], checkpoint)
        if kind == "official":
            return ToyOfficial(checkpoint=checkpoint, **_spec_options(spec, kind))
        raise UsageError(f"unknown candidate {spec!r} for the toy subject (impl, official[:...], dump:PATH)")

    def tokens(self, case: Case) -> subjects.TokenLayout | None:
        return subjects.TokenLayout(GENERATE, ("position",)) if case.has_call(":generate", 0) else None

    def logits_for(self, case: Case, index: tuple[int, ...]) -> subjects.LogitsCall | None:
        return subjects.LogitsCall("lm_head", int(index[0])) if case.has_call("lm_head", int(index[0])) else None

    def model_step(self, case: Case, key: str, call: int, role: str) -> tuple[int, ...] | None:
        if key == "(root)" and role == "outputs/0" and case.has_call(":generate", 0):
            return (call,)
        return None

    def keep(self, case: Case) -> list[str]:
        return [":generate"]


SUBJECT = ToySubject()


@contextlib.contextmanager
def registered() -> Iterator[ToySubject]:
    """The toy subject registered for the duration of a block."""
    subjects.register(SUBJECT, replace=True)
    try:
        yield SUBJECT
    finally:
        subjects.unregister(NAME)
