"""Model parity: our Llama 3.1 against Hugging Face's LlamaForCausalLM on CPU in fp32, plus the
properties the parallel layers rely on (meta build, deterministic init, pipeline stages, TP sharding).

Loss convention: HF's ``labels=tokens`` shifts inside (logit t predicts token t+1, the last position
ignored); we feed our ``cross_entropy_loss`` the same pairs explicitly: ``logits[:, :-1]`` vs ``tokens[:, 1:]``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainbench.config import ModelConfig
from trainbench.model import Llama, build_model, cross_entropy_loss, rope_inv_freq
from trainbench.model.llama import EMBEDDING_INIT_STD, INIT_STD, Attention, FeedForward, TransformerBlock

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

TINY = ModelConfig(
    layers=4,
    hidden=128,
    ffn=384,
    heads=8,
    query_groups=4,
    seq_len=256,
    vocab=512,
    norm_eps=1e-5,
    rope_theta=500_000.0,
    rope_scaling=True,
    rope_factor=8.0,
    rope_low_freq_factor=1.0,
    rope_high_freq_factor=4.0,
    rope_original_context=8192,
)


def hf_config(cfg: ModelConfig) -> LlamaConfig:
    # transformers 5.x spells rope scaling as ``rope_parameters`` (theta lives inside it).
    rope: dict[str, float | int | str] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope.update(
            rope_type="llama3",
            factor=cfg.rope_factor,
            low_freq_factor=cfg.rope_low_freq_factor,
            high_freq_factor=cfg.rope_high_freq_factor,
            original_max_position_embeddings=cfg.rope_original_context,
        )
    return LlamaConfig(
        vocab_size=cfg.vocab,
        hidden_size=cfg.hidden,
        intermediate_size=cfg.ffn,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.query_groups,
        max_position_embeddings=cfg.seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
    )


def to_hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """Rename our parameters to HF's; both use the rotate-half RoPE layout, so no permutation."""
    assert model.tok_embeddings is not None and model.norm is not None and model.output is not None
    sd = {
        "model.embed_tokens.weight": model.tok_embeddings.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.output.weight,
    }
    names = {
        "attention.wq": "self_attn.q_proj",
        "attention.wk": "self_attn.k_proj",
        "attention.wv": "self_attn.v_proj",
        "attention.wo": "self_attn.o_proj",
        "feed_forward.w1": "mlp.gate_proj",
        "feed_forward.w3": "mlp.up_proj",
        "feed_forward.w2": "mlp.down_proj",
        "attention_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    for key, layer in model.layers.items():
        for ours, theirs in names.items():
            sd[f"model.layers.{key}.{theirs}.weight"] = layer.get_submodule(ours).weight
    return {k: v.detach().clone() for k, v in sd.items()}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def pair() -> tuple[Llama, LlamaForCausalLM]:
    torch.manual_seed(0)
    ours = build_model(TINY, "cpu")
    hf = LlamaForCausalLM._from_config(hf_config(TINY), attn_implementation="eager", dtype=torch.float32)
    hf.load_state_dict(to_hf_state_dict(ours), strict=True)
    return ours, hf


def tokens(batch: int = 2, seed: int = 1, seqlen: int = TINY.seq_len) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.vocab, (batch, seqlen), generator=g)


def test_rope_scaling_hits_all_three_bands() -> None:
    inv = rope_inv_freq(TINY).double()
    plain = 1.0 / (TINY.rope_theta ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16))  # (D/2,) unscaled
    wavelen = 2 * math.pi / plain
    high_edge = TINY.rope_original_context / TINY.rope_high_freq_factor  # 2048
    low_edge = TINY.rope_original_context / TINY.rope_low_freq_factor  # 8192
    # head_dim 16, theta 5e5: wavelengths 6.3 .. 6.1e5 straddle both edges: 4 kept, 1 interpolated, 3 scaled.
    kept, scaled = wavelen < high_edge, wavelen > low_edge
    assert (int(kept.sum()), int((~kept & ~scaled).sum()), int(scaled.sum())) == (4, 1, 3)
    torch.testing.assert_close(inv[kept], plain[kept], rtol=1e-6, atol=0)
    torch.testing.assert_close(inv[scaled], plain[scaled] / TINY.rope_factor, rtol=1e-6, atol=0)
    medium = ~kept & ~scaled
    assert bool(((plain[medium] / TINY.rope_factor < inv[medium]) & (inv[medium] < plain[medium])).all())


@pytest.mark.parametrize("scaling", [True, False])
def test_rope_frequencies_match_hf(scaling: bool) -> None:
    cfg = ModelConfig(**{**TINY.__dict__, "rope_scaling": scaling})
    hcfg = hf_config(cfg)
    hf_inv = LlamaForCausalLM._from_config(hcfg).model.rotary_emb.inv_freq
    assert torch.equal(rope_inv_freq(cfg), hf_inv)
    if scaling:
        assert torch.equal(rope_inv_freq(cfg), ROPE_INIT_FUNCTIONS["llama3"](hcfg)[0])
    else:
        assert not torch.equal(rope_inv_freq(cfg), rope_inv_freq(TINY))


def test_logits_and_loss_match_hf(pair: tuple[Llama, LlamaForCausalLM]) -> None:
    ours, hf = pair
    x = tokens()
    with torch.no_grad():
        logits = ours(x)
        out = hf(input_ids=x, labels=x)
    assert logits.shape == (2, TINY.seq_len, TINY.vocab)
    assert rel_err(logits, out.logits) < 1e-5
    loss = cross_entropy_loss(logits[:, :-1], x[:, 1:])
    assert abs(loss.item() - out.loss.item()) / out.loss.item() < 1e-5
    # Sanity of the oracle itself: near-uniform predictions at init, so loss ~ ln(vocab).
    assert abs(loss.item() - math.log(TINY.vocab)) < 1.0


def test_three_adamw_steps_match_hf(pair: tuple[Llama, LlamaForCausalLM]) -> None:
    ours, hf = copy.deepcopy(pair[0]), copy.deepcopy(pair[1])
    hyper = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "foreach": False, "fused": False}
    opt_ours = torch.optim.AdamW(ours.parameters(), **hyper)
    opt_hf = torch.optim.AdamW(hf.parameters(), **hyper)
    losses_ours, losses_hf = [], []
    # One short batch, repeated: fast, and the loss must fall, so the steps demonstrably did something.
    x = tokens(batch=1, seed=10, seqlen=128)
    for _ in range(3):
        loss = cross_entropy_loss(ours(x)[:, :-1], x[:, 1:])
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad()
        hf_loss = hf(input_ids=x, labels=x).loss
        hf_loss.backward()
        opt_hf.step()
        opt_hf.zero_grad()
        losses_ours.append(loss.item())
        losses_hf.append(hf_loss.item())
    for a, b in zip(losses_ours, losses_hf, strict=True):
        assert abs(a - b) / b < 1e-4
    assert losses_ours[-1] < losses_ours[0]  # training moved, so the weight comparison means something
    # Weights compared by relative Frobenius norm, not elementwise max: Adam's normalized update turns fp32
    # round-off in near-zero gradient entries into lr-sized differences, so the elementwise max is seed noise
    # (measured 3e-5 .. 4e-4), while a real mismatch moves the whole tensor.
    hf_params = dict(hf.named_parameters())
    initial = to_hf_state_dict(pair[0])
    for name, ours_w in to_hf_state_dict(ours).items():
        hf_w = hf_params[name].detach()
        assert ((ours_w - hf_w).norm() / hf_w.norm()).item() < 1e-4, name
        # ... and the steps moved every tensor by well over that tolerance, so the comparison can fail.
        assert ((ours_w - initial[name]).norm() / initial[name].norm()).item() > 5e-4, name


def test_meta_build_allocates_nothing() -> None:
    # Llama 3.1 405B: 405,853,388,800 parameters (1.6 TB in fp32), which only a meta build survives.
    cfg = ModelConfig(
        name="405b", layers=126, hidden=16384, ffn=53248, heads=128, query_groups=8, seq_len=8192, vocab=128256
    )
    with torch.device("meta"):
        model = Llama(cfg)
    assert all(p.is_meta for p in model.parameters())
    assert all(b.is_meta for b in model.buffers())
    assert sum(p.numel() for p in model.parameters()) == 405_853_388_800


def test_to_empty_then_init_is_deterministic_and_recomputes_rope() -> None:
    torch.manual_seed(1234)
    a = build_model(TINY, "cpu")
    torch.manual_seed(1234)
    b = build_model(TINY, "cpu")
    torch.manual_seed(4321)
    c = build_model(TINY, "cpu")
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if not name.endswith("norm.weight"):
            assert not torch.equal(pa, pc), name
    # to_empty left the buffer as garbage; init_weights must have rebuilt it exactly.
    assert torch.equal(a.rope_cache, Llama(TINY).rope_cache)
    assert a.rope_cache.dtype == torch.float32


def test_init_scheme() -> None:
    torch.manual_seed(0)
    m = build_model(ModelConfig(**{**TINY.__dict__, "hidden": 256, "heads": 16}), "cpu")
    assert m.tok_embeddings is not None and m.norm is not None and m.output is not None

    def close(t: torch.Tensor, std: float) -> bool:
        return abs(t.std().item() / std - 1) < 0.05 and abs(t.mean().item()) < 0.05 * std

    assert close(m.tok_embeddings.weight, EMBEDDING_INIT_STD)
    assert close(m.output.weight, 256**-0.5)
    assert torch.equal(m.norm.weight, torch.ones(256))
    for key, layer in m.layers.items():
        out_std = INIT_STD / math.sqrt(2 * (int(key) + 1))
        assert close(layer.attention.wq.weight, INIT_STD) and close(layer.feed_forward.w1.weight, INIT_STD)
        assert close(layer.attention.wo.weight, out_std) and close(layer.feed_forward.w2.weight, out_std)
        assert torch.equal(layer.attention_norm.weight, torch.ones(256))
    assert not any(isinstance(mod, nn.Linear) and mod.bias is not None for mod in m.modules())


def test_pipeline_stages_compose_to_the_full_model() -> None:
    torch.manual_seed(0)
    full = build_model(TINY, "cpu")
    first, last = copy.deepcopy(full), copy.deepcopy(full)
    first.norm, first.output = None, None
    del first.layers["2"], first.layers["3"]
    last.tok_embeddings = None
    del last.layers["0"], last.layers["1"]
    x = tokens(batch=1)
    with torch.no_grad():
        hidden = first(x)
        assert hidden.shape == (1, TINY.seq_len, TINY.hidden)
        torch.testing.assert_close(last(hidden), full(x), rtol=0, atol=0)
    # Stages built on meta initialize too, with depth-scaled init following the original layer ids.
    with torch.device("meta"):
        stage = Llama(TINY)
    stage.tok_embeddings = None
    del stage.layers["0"]
    stage.to_empty(device="cpu")
    stage.init_weights()
    assert stage(torch.randn(1, 8, TINY.hidden)).shape == (1, 8, TINY.vocab)
    assert stage.rope_cache.shape == (TINY.seq_len, 2 * TINY.head_dim)


def test_attention_and_mlp_follow_sharded_weights() -> None:
    """Emulate 2-way tensor parallelism by hand: column-shard wq/wk/wv (and w1/w3) by heads, row-shard wo
    (and w2); the shards' partial outputs must sum to the unsharded output. Fails if forward hard-codes heads."""
    torch.manual_seed(0)
    block = build_model(TINY, "cpu").layers["1"]
    assert isinstance(block, TransformerBlock)
    x = torch.randn(2, 32, TINY.hidden)
    rope = Llama(TINY).rope_cache[:32]
    tp = 2
    for module, cols, rows in (
        (block.attention, ("wq", "wk", "wv"), ("wo",)),
        (block.feed_forward, ("w1", "w3"), ("w2",)),
    ):
        assert isinstance(module, Attention | FeedForward)
        with torch.no_grad():
            full = module(x, rope) if isinstance(module, Attention) else module(x)
            partial_sum = torch.zeros_like(full)
            for r in range(tp):
                shard = copy.deepcopy(module)
                for name in cols:
                    lin = shard.get_submodule(name)
                    lin.weight = nn.Parameter(lin.weight.chunk(tp, dim=0)[r].clone())
                for name in rows:
                    lin = shard.get_submodule(name)
                    lin.weight = nn.Parameter(lin.weight.chunk(tp, dim=1)[r].clone())
                partial_sum += shard(x, rope) if isinstance(shard, Attention) else shard(x)
        torch.testing.assert_close(partial_sum, full, rtol=1e-5, atol=1e-6)


def test_block_compiles_without_graph_breaks() -> None:
    torch.manual_seed(0)
    model = build_model(TINY, "cpu")
    block = model.layers["0"]
    x = torch.randn(1, 16, TINY.hidden)
    rope = model.rope_cache[:16]
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, rope), block(x, rope), rtol=0, atol=0)


def test_sequence_longer_than_rope_table_is_rejected() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY.__dict__, "seq_len": 8}), "cpu")
    with pytest.raises(ValueError, match="exceeds"):
        model(torch.zeros(1, 9, dtype=torch.long))
