"""Paired starts: the same seed gives the same shared weights whatever the attention.

Shared = every parameter outside the attention cores (embeddings, LayerNorms, c_attn,
c_proj, MLP, lm_head). The cores' own parameters come from (seed, layer) streams.
"""

from __future__ import annotations

import pytest
import torch

from rabench import attention
from rabench.attention import AttentionSpec
from rabench.attention.gates import GATE_INIT
from rabench.errors import RabenchError
from rabench.model import build_model

OPTIONS = {"ra-layers": {"layers": "1"}}  # tiny has 2 layers; RA in one of them


def shared(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if ".core." not in name}


def core_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if ".core." in name}


@pytest.fixture(scope="module")
def sdpa_seed3() -> dict[str, torch.Tensor]:
    return shared(build_model("tiny", "sdpa", None, seed=3))


@pytest.mark.parametrize("name", attention.names())
def test_shared_weights_identical_across_attentions(name: str, sdpa_seed3: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(12345)  # the global RNG must not matter
    mine = shared(build_model("tiny", name, OPTIONS.get(name), seed=3))
    assert list(mine) == list(sdpa_seed3)
    for key, value in mine.items():
        assert torch.equal(value, sdpa_seed3[key]), key


@pytest.mark.parametrize("name", attention.names())
def test_build_is_a_function_of_the_seed_alone(name: str) -> None:
    """Core parameters too: same seed, different global RNG states -> identical model."""
    torch.manual_seed(1)
    a = build_model("tiny", name, OPTIONS.get(name), seed=5)
    torch.manual_seed(2)
    torch.rand(17)
    b = build_model("tiny", name, OPTIONS.get(name), seed=5)
    for (key, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), key


def test_different_seeds_differ() -> None:
    a, b = build_model("tiny", "ra-open", None, 0), build_model("tiny", "ra-open", None, 1)
    for key, value in shared(a).items():
        if value.std() > 0:  # LayerNorm gains and zero biases are constant by design
            assert not torch.equal(value, shared(b)[key]), key
    u0 = [v for k, v in core_params(a).items() if k.endswith(".u")]
    u1 = [v for k, v in core_params(b).items() if k.endswith(".u")]
    assert len(u0) == 2 and all(not torch.equal(x, y) for x, y in zip(u0, u1))


def test_layers_get_different_core_streams() -> None:
    model = build_model("tiny", "ra-open", None, 0)
    u = [core.gates.u for core in model.cores()]
    assert not torch.equal(u[0], u[1])


def test_core_streams_do_not_shift_shared_weights_or_each_other() -> None:
    """ra-lowrank's extra draws (orthogonal W1/W2) leave the gates' u of the same layer as ra-open's."""
    a = build_model("tiny", "ra-open", None, 4)
    b = build_model("tiny", "ra-lowrank", None, 4)
    for ca, cb in zip(a.cores(), b.cores()):
        assert torch.equal(ca.gates.u, cb.gates.u)


def test_shared_init_distribution() -> None:
    model = build_model("small", "sdpa", None, 0)
    wte = model.wte.weight
    assert abs(wte.std().item() - 0.02) < 1e-3 and abs(wte.mean().item()) < 1e-3
    proj = model.blocks[0].attn.c_proj.weight
    assert abs(proj.std().item() - 0.02 / (2 * model.cfg.n_layer) ** 0.5) < 5e-4
    assert torch.equal(model.blocks[0].ln_1.weight, torch.ones_like(model.blocks[0].ln_1.weight))
    assert torch.count_nonzero(model.blocks[0].mlp.c_fc.bias) == 0


def test_gate_init_unchanged_in_distribution() -> None:
    """logits exactly GATE_INIT; u ~ N(0, 0.02^2), over many layers' draws."""
    us, logits = [], []
    for seed in range(3):
        m = build_model("small", "ra-open", None, seed)
        for core in m.cores():
            us.append(core.gates.u.detach().flatten())
            logits.append(core.gates.logits.detach())
    u = torch.cat(us)
    assert u.numel() == 3 * 6 * 6 * 64
    assert abs(u.std().item() - 0.02) < 0.001 and abs(u.mean().item()) < 0.001
    for g in logits:
        assert torch.equal(g, torch.tensor(GATE_INIT).repeat(g.shape[0], 1))


def test_variant_params_keep_their_init_distributions() -> None:
    spec = AttentionSpec(4, 16, 64, 0, 1, attention.resolve_options("ra-adaptive", {}))
    gen = torch.Generator().manual_seed(0)
    core = attention.build("ra-adaptive", spec)
    core.reset_parameters(gen)
    assert torch.equal(core.gate_net.bias, torch.full((4,), 2.0))
    assert abs(core.gate_net.weight.std().item() - 0.02) < 0.004
    gated = attention.build("ra-gated", AttentionSpec(4, 16, 64, 0, 1, attention.resolve_options("ra-gated", {})))
    gated.reset_parameters(gen)
    bound = 1 / 3**0.5  # nn.Linear's U(+-1/sqrt(fan_in)), fan_in 3
    assert gated.fc.weight.abs().max() <= bound and gated.fc.weight.abs().max() > 0.5 * bound
    assert torch.equal(gated.out.bias, torch.full((1,), 2.0))
    lowrank = attention.build("ra-lowrank", AttentionSpec(4, 16, 64, 0, 1, attention.resolve_options("ra-lowrank", {"rank": 4})))
    lowrank.reset_parameters(gen)
    eye = torch.eye(4).expand(4, 4, 4)
    assert torch.allclose(lowrank.w1.transpose(1, 2) @ lowrank.w1, eye, atol=1e-5)
    assert torch.equal(lowrank.w1, lowrank.w2)


def test_negative_seed_is_a_one_line_error() -> None:
    with pytest.raises(RabenchError, match="seed must be a non-negative integer"):
        build_model("tiny", "sdpa", None, -1)
