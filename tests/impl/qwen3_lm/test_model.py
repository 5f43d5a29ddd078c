"""impl/qwen3_lm against transformers' Qwen3ForCausalLM on tiny seeded configs (every parameter drawn from
a seed per name: no identity norms, no zero biases), saved with save_pretrained and loaded by both sides:
prefill logits, greedy decoding with a KV cache, a left-padded batch, tied and untied lm_head, the module
tree and the tap. float32 against float32, within 20 times the official model's own float32-vs-float64
difference of the same tensor (the project policy's k)."""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import numpy as np
import pytest

from impl.qwen3_lm import load, nn

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.official

K = 20.0  # the project policy's calibration factor
EOS, PAD = 3, 0
PROMPTS = [[17, 42, 8, 91, 23, 5, 60], [11, 77, 29, 4]]  # the second is left-padded in a batch


def tiny_config(tied: bool) -> Any:
    config = transformers.Qwen3Config(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, rope_theta=10000.0,
                                      rms_norm_eps=1e-6, max_position_embeddings=64, tie_word_embeddings=tied,
                                      eos_token_id=EOS, pad_token_id=PAD, bos_token_id=1)  # fmt: skip
    config._attn_implementation = "eager"
    return config


def randomize_(model: Any, seed: int) -> None:
    """Every parameter from its own seeded generator: norm weights around 1 (not 1), the rest scaled so
    activations stay of order one."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            values = torch.randn(parameter.shape, generator=gen, dtype=torch.float64)
            if name.endswith("norm.weight"):
                values = 1 + 0.3 * values
            elif parameter.ndim == 2 and "embed_tokens" not in name:
                values = values / parameter.shape[1] ** 0.5
            parameter.copy_(values.to(parameter.dtype))


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def models(request: Any, tmp_path_factory: Any) -> dict[str, Any]:
    """The official model in float32 and float64 and the impl loaded from their save_pretrained folder."""
    tied = request.param
    official = transformers.Qwen3ForCausalLM(tiny_config(tied))
    randomize_(official, seed=7)
    official.eval()
    folder = tmp_path_factory.mktemp("qwen3_lm")
    official.save_pretrained(folder, safe_serialization=True)
    official64 = transformers.Qwen3ForCausalLM.from_pretrained(folder, torch_dtype=torch.float64,
                                                               attn_implementation="eager").eval()  # fmt: skip
    return {"folder": folder, "tied": tied, "official": official, "official64": official64,
            "impl": load(folder, np.float32)}  # fmt: skip


def padded_batch() -> tuple[np.ndarray, np.ndarray]:
    width = max(len(p) for p in PROMPTS)
    ids = np.full((len(PROMPTS), width), PAD, dtype=np.int64)
    mask = np.zeros((len(PROMPTS), width), dtype=np.int64)
    for row, prompt in enumerate(PROMPTS):
        ids[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def mask_positions(mask: np.ndarray) -> np.ndarray:
    """What generate gives the model: cumsum(mask) - 1, 1 at padding."""
    return np.where(mask == 0, 1, np.cumsum(mask, axis=-1) - 1)


def alone_inputs(prompt: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray([prompt], dtype=np.int64)
    return ids, np.ones_like(ids), mask_positions(np.ones_like(ids))


def official_logits(model: Any, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                    position_ids=torch.from_numpy(positions))  # fmt: skip
    return out.logits.double().numpy()


def rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    return float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference))


def assert_within_noise(official32: np.ndarray, official64: np.ndarray, impl32: np.ndarray) -> None:
    """The impl's float32 result is as close to the official float32 one as K times the official's own
    float32 error allows, by rel_l2 and by max_abs, and in float32."""
    assert impl32.dtype == np.float32 and impl32.shape == official32.shape
    noise_rel = max(rel_l2(official64, official32), 1e-7)
    noise_abs = max(float(np.max(np.abs(official64 - official32))), 1e-7 * float(np.max(np.abs(official64))))
    assert rel_l2(official32, impl32) <= K * noise_rel, (rel_l2(official32, impl32), noise_rel)
    assert float(np.max(np.abs(impl32 - official32))) <= K * noise_abs


def test_prefill_logits(models: dict[str, Any]) -> None:
    ids = np.asarray([PROMPTS[0], PROMPTS[0][::-1]], dtype=np.int64)
    mask = np.ones_like(ids)
    positions = mask_positions(mask)
    got = models["impl"](input_ids=ids)["logits"]
    assert_within_noise(official_logits(models["official"], ids, mask, positions),
                        official_logits(models["official64"], ids, mask, positions), got)  # fmt: skip


def test_loading_follows_the_checkpoint(models: dict[str, Any]) -> None:
    """Every tensor of the save_pretrained folder is used; tied embeddings make one table for both ends."""
    impl = models["impl"]
    assert impl.unused_weights == []
    embedding, head = impl.model.embed_tokens.weight, impl.lm_head.weight
    assert np.array_equal(embedding, head) == models["tied"]
    expected = models["official"].model.layers[1].self_attn.k_norm.weight.detach().numpy()
    np.testing.assert_array_equal(impl.get("model.layers.1.self_attn.k_norm").weight, expected)


def test_greedy_decode_with_the_kv_cache(models: dict[str, Any]) -> None:
    """Greedy tokens equal the official generate's, and every cached step's logits equal a full recompute."""
    ids = np.asarray([PROMPTS[0]], dtype=np.int64)
    with torch.no_grad():
        expected = models["official"].generate(torch.from_numpy(ids), max_new_tokens=10, do_sample=False,
                                               min_new_tokens=10).numpy()  # fmt: skip
    impl = models["impl"]
    got = impl.generate(ids, max_new_tokens=10, min_new_tokens=10)
    np.testing.assert_array_equal(got, expected)
    full = impl(input_ids=got[:, :-1])["logits"]  # (1, T + 9, vocab), no cache
    cache_steps = impl.generate(ids, max_new_tokens=10, min_new_tokens=10, return_dict_in_generate=True)
    cache = cache_steps["past_key_values"]
    assert cache["layers"][0]["keys"].shape == (1, 2, got.shape[1] - 1, 8)  # (B, H_kv, positions, D)
    stepwise = impl(input_ids=got[:, -2:-1], past_key_values=_truncated(cache, got.shape[1] - 2),
                    cache_position=np.array([got.shape[1] - 2]))["logits"]  # fmt: skip
    np.testing.assert_allclose(stepwise[:, -1], full[:, -1], rtol=0, atol=1e-5 * float(np.abs(full).max()))


def _truncated(cache: dict[str, Any], length: int) -> dict[str, Any]:
    return {"layers": [{**layer, "keys": layer["keys"][:, :, :length], "values": layer["values"][:, :, :length]}
                       for layer in cache["layers"]]}  # fmt: skip


def test_left_padded_batch(models: dict[str, Any]) -> None:
    """A left-padded batch: logits at every real position within noise of the official's, greedy tokens
    equal to the official batch generate, and each row equal to the same prompt alone."""
    ids, mask = padded_batch()
    positions = mask_positions(mask)
    impl = models["impl"]
    got = impl(input_ids=ids, attention_mask=mask, position_ids=positions)["logits"]
    real = mask.astype(bool)
    expected = official_logits(models["official"], ids, mask, positions)
    # float64 reference row by row: the official eager softmax runs in float32, where float64's most negative
    # mask value is -inf, so a fully masked padding row is NaN and the NaN reaches the real rows through
    # the next layer's values
    expected64 = np.concatenate([official_logits(models["official64"], *alone_inputs(p))[0] for p in PROMPTS])
    assert_within_noise(expected[real], expected64, got[real])
    alone = impl(input_ids=np.asarray([PROMPTS[1]]))["logits"][0]
    np.testing.assert_allclose(got[1][real[1]], alone, rtol=0, atol=1e-5 * float(np.abs(alone).max()))
    with torch.no_grad():
        sequences = models["official"].generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                                max_new_tokens=6, do_sample=False).numpy()  # fmt: skip
    np.testing.assert_array_equal(impl.generate(ids, attention_mask=mask, max_new_tokens=6), sequences)


def test_modules_at_the_official_paths_and_every_call_tapped(models: dict[str, Any]) -> None:
    """The impl has the official module tree (bar the never-called ModuleList) and, while tapped, reports
    exactly the module calls forward hooks see in the official model, in the same numbers, for a generate."""
    official, impl = models["official"], models["impl"]
    official_paths = {name for name, _ in official.named_modules()} - {"model.layers"}
    assert {path for path, _ in impl.named_modules()} == official_paths
    seen: Counter[str] = Counter()
    hooks = [module.register_forward_hook(lambda m, a, o, name=name: seen.update([name or "(root)"]))
             for name, module in official.named_modules()]  # fmt: skip
    ids = np.asarray([PROMPTS[1]], dtype=np.int64)
    try:
        with torch.no_grad():
            official.generate(torch.from_numpy(ids), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    finally:
        for hook in hooks:
            hook.remove()
    tapped: Counter[str] = Counter()

    def tap(key: str, phase: str, args: tuple, kwargs: dict, outputs: Any) -> None:
        if phase == "return" and ":" not in key:  # methods (`:generate`) are not forward hooks
            tapped[key] += 1

    with nn.tapping(tap):
        impl.generate(ids, max_new_tokens=4, min_new_tokens=4)
    assert tapped == seen


def test_float64_is_a_clean_reference(models: dict[str, Any]) -> None:
    """Loaded in float64 the impl computes in float64 throughout (the official forces float32 in its
    norms and RoPE, so the two agree only to float32 rounding)."""
    impl64 = load(models["folder"], np.float64)
    ids = np.asarray([PROMPTS[0]], dtype=np.int64)
    logits = impl64(input_ids=ids)["logits"]
    assert logits.dtype == np.float64
    expected = official_logits(models["official64"], ids, np.ones_like(ids), mask_positions(np.ones_like(ids)))
    assert rel_l2(expected, logits) < 1e-5
    assert rel_l2(logits, models["impl"](input_ids=ids)["logits"]) < 1e-5
