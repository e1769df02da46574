"""Every attention path against a float64 reference of its definition: outputs and gradients."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from rabench import attention
from rabench.attention import AttentionSpec
from rabench.attention.kernel_route import row_gated_pair, run_canonical_ra
from rabench.kernels import reference as kernel_oracle
from reference import assert_matches, ra_norec_reference, ra_reference, rel_err, standard_reference

SHAPES = [(2, 3, 1, 8), (1, 2, 7, 16), (2, 2, 33, 8), (1, 1, 50, 32)]  # (B, H, T, D): T not a power of two
TOL = 1e-10


def make(name: str, h: int, d: int, **options) -> torch.nn.Module:
    spec = AttentionSpec(n_head=h, head_dim=d, n_embd=h * d, layer_idx=0, n_layer=1,
                         options=attention.resolve_options(name, options))
    module = attention.build(name, spec).double()
    with torch.no_grad():  # gates away from their init so every term matters
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def inputs(b: int, h: int, t: int, d: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True) for _ in range(3))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["sdpa", "open"])
def test_standard_paths_match_reference(name: str, shape: tuple[int, ...]) -> None:
    b, h, t, d = shape
    q, k, v = inputs(*shape)
    module = make(name, h, d)
    out = module(q, k, v, None)
    ref = standard_reference(q, k, v)
    assert_matches(out, ref, [q, k, v], TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_std_gated_matches_reference(shape: tuple[int, ...]) -> None:
    b, h, t, d = shape
    q, k, v = inputs(*shape)
    module = make("std-gated", h, d)
    g = module.gate_logits
    out = module(q, k, v, None)
    ref = standard_reference(q, k, v, temperature=torch.softmax(g, -1)[:, 0])
    assert_matches(out, ref, [q, k, v, g], TOL)


@pytest.mark.parametrize("attn,gate", [("std-gated", "gate_logits"), ("ra-norec", "gates.logits")])
def test_a_query_map_folded_into_the_projection_is_the_same_layer(attn: str, gate: str) -> None:
    """In the model the block folds the core's query map (std-gated: q -> w_std q; ra-norec:
    q -> w_std q + (w_disc/c) u) into c_attn's query rows and calls attend; the layer must equal
    the one that maps q in the core, output and every gradient (float64), and the core called as a
    module must still match its definition."""
    from rabench.model.config import ModelConfig
    from rabench.model.gpt import CausalSelfAttention

    h, d, t = 3, 8, 17
    cfg = ModelConfig(n_layer=1, n_head=h, n_embd=h * d, block_size=t, vocab_size=16)
    folded = CausalSelfAttention(cfg, make(attn, h, d)).double()
    plain = CausalSelfAttention(cfg, make(attn, h, d)).double()
    plain.load_state_dict(folded.state_dict())
    plain.folds_query = False  # the core, called as a module, maps q
    assert folded.folds_query
    x = torch.randn(2, t, h * d, dtype=torch.float64)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [m(xi) for m, xi in zip((folded, plain), xs)]
    assert rel_err(outs[0], outs[1]) < TOL
    w = torch.randn_like(outs[0])
    for o in outs:
        (o * w).sum().backward()
    assert rel_err(xs[0].grad, xs[1].grad) < TOL
    for (name, p1), p2 in zip(folded.named_parameters(), plain.parameters()):
        assert rel_err(p1.grad, p2.grad) < TOL, name
    # the fold is not a no-op: a layer with other gates differs
    with torch.no_grad():
        folded.core.get_parameter(gate)[:, 0] += 1.0
    assert rel_err(folded(x), plain(x)) > 1e-3
    # the core called as a module, also the one inside the model, computes its definition
    q, k, v = inputs(1, h, t, d)
    for core in (make(attn, h, d), folded.core):
        if attn == "std-gated":
            expected = core.reference(q, k, v, None)
        else:  # w_std S + w_disc d, open-coded
            expected = ra_norec_reference(q, k, v, core.gates.logits, core.gates.u)
        assert rel_err(core(q, k, v, None), expected) < TOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["ra-open", "ra-folded"])
def test_ra_paths_match_reference(name: str, shape: tuple[int, ...]) -> None:
    b, h, t, d = shape
    q, k, v = inputs(*shape)
    module = make(name, h, d)
    g, u = module.gates.logits, module.gates.u
    out = module(q, k, v, None)
    ref = ra_reference(q, k, v, g, u)
    assert_matches(out, ref, [q, k, v, g, u], TOL)


@pytest.mark.parametrize("backend", ["torch", "folded"])
@pytest.mark.parametrize("shape", SHAPES)
def test_ra_norec_matches_reference(shape: tuple[int, ...], backend: str) -> None:
    b, h, t, d = shape
    q, k, v = inputs(*shape)
    module = make("ra-norec", h, d, backend=backend)
    g, u = module.gates.logits, module.gates.u
    out = module(q, k, v, None)
    ref = ra_norec_reference(q, k, v, g, u)
    assert_matches(out, ref, [q, k, v, g, u], TOL)


def test_ra_norec_is_ra_without_the_reciprocal_term(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same logits and u: ra-norec == ra-open with w_rec forced to 0 (w_std, w_disc untouched), != ra-open."""
    q, k, v = inputs(2, 3, 20, 16)
    ra, norec = make("ra-open", 3, 16), make("ra-norec", 3, 16, backend="torch")
    with torch.no_grad():
        norec.gates.logits.copy_(ra.gates.logits)
        norec.gates.u.copy_(ra.gates.u)
    assert rel_err(ra(q, k, v, None), norec(q, k, v, None)) > 1e-3
    w_std, w_rec, w_disc = ra.gates.weights()
    monkeypatch.setattr(ra.gates, "weights", lambda: (w_std, torch.zeros_like(w_rec), w_disc))
    assert rel_err(ra(q, k, v, None), norec(q, k, v, None)) < TOL


def test_ra_norec_starts_with_ra_gates_and_logs_w_rec_zero() -> None:
    spec = AttentionSpec(4, 16, 64, 0, 1, attention.resolve_options("ra-norec", {}))
    norec, ra = attention.build("ra-norec", spec), attention.build("ra-open", AttentionSpec(4, 16, 64, 0, 1, {}))
    assert torch.equal(norec.gates.logits, ra.gates.logits)
    means = norec.gate_means()
    assert means["w_rec"] == 0.0
    assert means["w_std"] == pytest.approx(0.7551, abs=1e-3) and means["w_disc"] == pytest.approx(0.0925, abs=1e-3)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gated", [False, True])
def test_an_untied_reciprocal_pair_folds_ra_exactly(shape: tuple[int, ...], gated: bool) -> None:
    """run_canonical_ra with its reciprocal pair passed apart, (k, q) or a row gate's (r k, q),
    the form ra-gated, ra-budget and ra-adaptive hand the kernel, is canonical RA (with the row
    gate on its reciprocal term), gradients included, the row gate's too."""
    b, h, t, d = shape
    q, k, v = inputs(*shape)
    module = make("ra-open", h, d)
    g, u = module.gates.logits, module.gates.u
    r = torch.rand(b, h, t, dtype=torch.float64, requires_grad=True) if gated else None
    pair = row_gated_pair(q, k, r) if gated else (k, q)
    out = run_canonical_ra(q, k, v, module.gates, d**-0.5, backend="torch", pair=pair)
    ref = ra_reference(q, k, v, g, u, row_gate=r)
    assert_matches(out, ref, [q, k, v, g, u] + ([r] if gated else []), TOL)


@pytest.mark.parametrize("band", [None, 1, 5])
def test_kernel_oracle_in_its_tied_scaled_form_is_canonical_ra(band: int | None) -> None:
    """The package's torch oracle, given RA as the fused kernel gets it (q1 = q, k1 = k, per-head
    scales w_std c and w_rec c, the reciprocal pair tied, the bias as the vector w_disc u), against
    the tests' own reference: outputs and gradients."""
    q, k, v = inputs(2, 3, 33, 8)
    module = make("ra-open", 3, 8)
    g, u = module.gates.logits, module.gates.u
    w, c = torch.softmax(g, -1), 8**-0.5
    out = kernel_oracle.ra_reference(q, k, None, None, v, u * w[:, 2:3], band, scale1=w[:, 0] * c,
                                     scale2=w[:, 1] * c, tied=True)
    assert_matches(out, ra_reference(q, k, v, g, u, band=band), [q, k, v, g, u], TOL)


def test_kernel_oracle_imports_without_the_triton_kernels() -> None:
    """The CPU route runs the oracle; Triton is a Linux-only dependency, so loading the oracle
    (and the attention package) must not load the Triton ops."""
    code = ("import sys, rabench.attention.kernel_route, rabench.kernels.reference\n"
            "assert 'rabench.kernels.op' not in sys.modules, 'the Triton ops were loaded'\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_ra_open_without_reciprocity_equals_std_gated(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = inputs(2, 3, 20, 16)
    ra = make("ra-open", 3, 16)
    ctrl = make("std-gated", 3, 16)
    with torch.no_grad():
        ctrl.gate_logits.copy_(ra.gates.logits)
    w_std = torch.softmax(ra.gates.logits, -1)[:, 0]
    monkeypatch.setattr(ra.gates, "weights", lambda: (w_std, torch.zeros_like(w_std), torch.zeros_like(w_std)))
    assert rel_err(ra(q, k, v, None), ctrl(q, k, v, None)) < TOL
    # and with reciprocity on, they differ: the test above can fail
    monkeypatch.undo()
    assert rel_err(ra(q, k, v, None), ctrl(q, k, v, None)) > 1e-3


def test_gate_init_matches_the_method() -> None:
    module = attention.build("ra-open", AttentionSpec(4, 16, 64, 0, 1, {}))
    w_std, w_rec, w_disc = module.gates.weights()
    assert torch.allclose(w_std, torch.full((4,), 0.7551), atol=1e-3)
    assert torch.allclose(w_rec, torch.full((4,), 0.1525), atol=1e-3)
    assert torch.allclose(w_disc, torch.full((4,), 0.0925), atol=1e-3)
    assert module.gates.u.std().item() < 0.05


def test_unknown_attention_and_option_are_one_line_errors() -> None:
    from rabench.errors import RabenchError

    with pytest.raises(RabenchError, match="unknown attention 'nope'"):
        attention.entry("nope")
    with pytest.raises(RabenchError, match="has no option 'p'"):
        attention.resolve_options("sdpa", {"p": "1"})
    with pytest.raises(RabenchError, match="key=value"):
        attention.parse_option_strings(["novalue"])
    with pytest.raises(RabenchError, match="ra-norec: backend 'fast' is unknown; choose auto, triton, torch, folded"):
        make("ra-norec", 2, 8, backend="fast")


@pytest.mark.parametrize("name", attention.names())
def test_every_attention_is_causal(name: str) -> None:
    """Changing tokens from position t0 on never changes any output before t0 (no future leak)."""
    b, h, t, d, t0 = 2, 2, 40, 16, 23
    spec = AttentionSpec(n_head=h, head_dim=d, n_embd=h * d, layer_idx=0, n_layer=1,
                         options=attention.resolve_options(name, {"layers": "0"} if name == "ra-layers" else {}))
    # a GPU-only attention runs on the GPU when there is one (else under the interpreter)
    device = "cuda" if attention.entry(name).needs_gpu and torch.cuda.is_available() else "cpu"
    module = attention.build(name, spec).eval().to(device)
    q, k, v = (torch.randn(b, h, t, d, device=device) for _ in range(3))
    x = torch.randn(b, t, h * d, device=device)
    with torch.no_grad():
        out = module(q, k, v, x)
        q2, k2, v2, x2 = q.clone(), k.clone(), v.clone(), x.clone()
        for z in (q2, k2, v2):
            z[:, :, t0:] = torch.randn_like(z[:, :, t0:])
        x2[:, t0:] = torch.randn_like(x2[:, t0:])
        out2 = module(q2, k2, v2, x2)
    assert torch.allclose(out[:, :, :t0], out2[:, :, :t0], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, :, t0:], out2[:, :, t0:])  # the later outputs did change


@pytest.mark.parametrize("terms", [{}, {"band": 5}, {"row_gate": True}, {"band": 3, "row_gate": True}])
def test_the_products_definitions_match_the_tests_oracle(terms: dict) -> None:
    """rabench.attention.definitions (rabench check's oracle) against tests/reference.py, float64."""
    from rabench.attention.definitions import ra_definition

    b, h, t, d = 2, 3, 17, 8
    q, k, v = inputs(b, h, t, d)
    gates = make("ra-open", h, d).gates
    row_gate = torch.rand(b, h, t, dtype=torch.float64) if terms.get("row_gate") else None
    band = terms.get("band")
    ours = ra_definition(q, k, v, gates, d**-0.5, band=band, row_gate=row_gate)
    theirs = ra_reference(q, k, v, gates.logits, gates.u, row_gate=row_gate, band=band)
    assert rel_err(ours, theirs) < 1e-12
    assert rel_err(ra_definition(q, k, v, gates, d**-0.5, rec_mult=0.0),
                   ra_norec_reference(q, k, v, gates.logits, gates.u)) < 1e-12
