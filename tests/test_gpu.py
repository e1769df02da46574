"""GPU-only checks (skipped on CPUs): the compiled kernels against float64 at GPT-2 shapes,
and torch.compile of a model with ra-triton against the same model in eager mode."""

from __future__ import annotations

import pytest
import torch
from reference import heads

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.usefixtures("poison_kernel_outputs")]  # unwritten outputs show up as NaN

BF16_TOL = 1e-2  # bf16 operands (fp32 accumulation): seen ~2.5e-3 on an H100


@pytest.fixture(params=["one-pass", "two-pass"])
def backward(request):
    """The test runs once per kernel backward (row side by fp32 atomics, or a dq kernel)."""
    from rabench.kernels import tuning

    tuning.force_backward(request.param)
    yield request.param
    tuning.force_backward(None)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    assert a.shape == ref.shape and torch.isfinite(a).all()
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12)).item()


@pytest.mark.usefixtures("backward")
@pytest.mark.parametrize("d2,band", [(64, None), (64, 128), (16, None)])
def test_kernel_matches_float64_at_gpt2_shape(d2, band):
    from rabench.kernels import ra_attention
    from rabench.kernels.reference import ra_reference

    B, H, T, D = 2, 12, 1024, 64
    g = torch.Generator(device="cuda").manual_seed(torch.randint(0, 2**31, ()).item())

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, device="cuda", generator=g) * scale).to(torch.bfloat16).requires_grad_()
    ins = [r(B, H, T, D, scale=D ** -0.5), r(B, H, T, D), r(B, H, T, d2, scale=0.5 * d2 ** -0.5),
           r(B, H, T, d2), r(B, H, T, D),
           (torch.randn(B, H, T, device="cuda", generator=g) * 0.5).requires_grad_()]
    o = ra_attention(*ins, band=band)
    do = torch.randn(o.shape, device="cuda", generator=g).to(o.dtype)
    grads = torch.autograd.grad(o, ins, do)
    ins64 = [x.detach().double().requires_grad_() for x in ins]
    ref = ra_reference(*ins64, band=band)
    ref_grads = torch.autograd.grad(ref, ins64, do.double())
    errs = {"o": rel_err(o, ref)}
    for name, a, b in zip(("q1", "k1", "q2", "k2", "v", "bias"), grads, ref_grads):
        errs["d" + name] = rel_err(a, b)
    assert max(errs.values()) < BF16_TOL, errs


@pytest.mark.usefixtures("backward")
@pytest.mark.parametrize("pair", ["tied", "row-gated", "low-rank"])
def test_kernel_with_scales_and_bias_vector_matches_float64_at_gpt2_shape(pair):
    """The fast route's calls (kernel_route.run_canonical_ra): q, k, v as strided views of one qkv
    tensor, the gates as per-head scales, the bias as the vector u (bias_j = k_j . u, computed in
    the kernels), and the reciprocal pair tied (canonical RA), a row gate's (r k, q) (ra-gated,
    ra-adaptive, ra-budget) or a low-rank (k W2, q W1) at r = 16 (ra-lowrank). Output and the
    gradients of qkv, u, both scales and the pair's own parameters against float64."""
    from rabench.attention.kernel_route import row_gated_pair
    from rabench.kernels import ra_attention
    from rabench.kernels.reference import ra_reference

    B, H, T, D = 2, 12, 1024, 64
    g = torch.Generator(device="cuda").manual_seed(torch.randint(0, 2**31, ()).item())
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    u = (torch.randn(H, D, device="cuda", generator=g) * 0.3).requires_grad_()
    s1 = (torch.rand(H, device="cuda", generator=g) * 0.1 + 0.08).requires_grad_()  # ~ w_std / sqrt(D)
    s2 = (torch.rand(H, device="cuda", generator=g) * 0.03).requires_grad_()        # ~ w_rec / sqrt(D)
    own = {"tied": [],
           "row-gated": [(torch.rand(B, H, T, device="cuda", generator=g) * 0.9 + 0.1).requires_grad_()],
           "low-rank": [(torch.randn(H, D, 16, device="cuda", generator=g) * D ** -0.5).requires_grad_()
                        for _ in range(2)]}[pair]


    def reciprocal_pair(q, k, params):
        if pair == "row-gated":
            return row_gated_pair(q, k, params[0])
        if pair == "low-rank":
            w1, w2 = params
            return torch.einsum("bhtd,hdr->bhtr", k, w2.to(k.dtype)), torch.einsum("bhtd,hdr->bhtr", q, w1.to(q.dtype))
        return None, None
    q, k, v = heads(qkv, H)
    q2, k2 = reciprocal_pair(q, k, own)
    o = ra_attention(q, k, q2, k2, v, u, scale1=s1, scale2=s2, tied=pair == "tied")
    do = torch.randn(o.shape, device="cuda", generator=g).to(o.dtype)
    leaves = [qkv, u, s1, s2] + own
    grads = torch.autograd.grad(o, leaves, do)
    l64 = [x.detach().double().requires_grad_() for x in leaves]
    q_, k_, v_ = heads(l64[0], H)
    q2_, k2_ = reciprocal_pair(q_, k_, l64[4:]) if pair != "tied" else (k_, q_)
    bias = torch.einsum("bhtd,hd->bht", k_, l64[1])
    ref = ra_reference(q_ * l64[2].view(1, H, 1, 1), k_, q2_ * l64[3].view(1, H, 1, 1), k2_, v_, bias)
    ref_grads = torch.autograd.grad(ref, l64, do.double())
    names = ["qkv", "u", "s1", "s2"] + [f"pair{i}" for i in range(len(own))]  # the pair's own: r, or W1, W2
    errs = {"o": rel_err(o, ref)} | {"d" + n: rel_err(a, b) for n, a, b in zip(names, grads, ref_grads)}
    # the scales' and the pair's parameters' gradients are sums over B*T (and D) of products of
    # bf16-rounded tiles: allow twice
    summed = {"ds1", "ds2", "dpair0", "dpair1"}
    assert max(v for n, v in errs.items() if n not in summed) < BF16_TOL, errs
    assert max(v for n, v in errs.items() if n in summed) < 2 * BF16_TOL, errs



@pytest.mark.usefixtures("backward")
def test_tile_bias_matches_float64_at_gpt2_shape():
    """ra-amortized's reuse step on the kernel: no reciprocal term, the scale and the bias vector
    u, and a bf16 tile bias R (H, T, T) sliced from a larger pattern with -inf above the diagonal
    (as the module caches it). Output and the gradients of qkv, u and the scale against float64."""
    from rabench.kernels import ra_attention
    from rabench.kernels.reference import ra_reference

    B, H, T, D, Tc = 2, 12, 1024, 64, 1040
    g = torch.Generator(device="cuda").manual_seed(torch.randint(0, 2**31, ()).item())
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    u = (torch.randn(H, D, device="cuda", generator=g) * 0.3).requires_grad_()
    s1 = (torch.rand(H, device="cuda", generator=g) * 0.1 + 0.08).requires_grad_()
    future = torch.ones(Tc, Tc, dtype=torch.bool, device="cuda").triu(1)
    cached = (torch.randn(H, Tc, Tc, device="cuda", generator=g) * 0.5).masked_fill(future, float("-inf"))
    R = cached.to(torch.bfloat16)[:, :T, :T]

    q, k, v = heads(qkv, H)
    o = ra_attention(q, k, None, None, v, u, scale1=s1, tile_bias=R)
    do = torch.randn(o.shape, device="cuda", generator=g).to(o.dtype)
    leaves = [qkv, u, s1]
    grads = torch.autograd.grad(o, leaves, do)
    l64 = [x.detach().double().requires_grad_() for x in leaves]
    q_, k_, v_ = heads(l64[0], H)
    bias = torch.einsum("bhtd,hd->bht", k_, l64[1])
    ref = ra_reference(q_ * l64[2].view(1, H, 1, 1), k_, None, None, v_, bias, tile_bias=R.double())
    ref_grads = torch.autograd.grad(ref, l64, do.double())
    errs = {"o": rel_err(o, ref)} | {"d" + n: rel_err(a, b) for n, a, b in zip(("qkv", "u", "s1"), grads, ref_grads)}
    assert max(v for n, v in errs.items() if n != "ds1") < BF16_TOL, errs
    assert errs["ds1"] < 2 * BF16_TOL, errs

@pytest.mark.parametrize("reciprocal", [True, False])
def test_gated_eager_entry_matches_float64_at_gpt2_shape(reciprocal):
    """The eager route of ra-triton and ra-norec's kernel backend (kernel_route.run_canonical_ra ->
    eager_gated.ra_gated_eager: the gate kernels around the RA kernels) against the definition in float64:
    output and the gradients of qkv, the gate logits and u, bf16 activations."""
    from rabench.attention.definitions import ra_definition
    from rabench.attention.gates import RAGates
    from rabench.attention.kernel_route import run_canonical_ra

    B, H, T, D = 2, 12, 1024, 64
    g = torch.Generator(device="cuda").manual_seed(torch.randint(0, 2**31, ()).item())
    qkv = torch.randn(B, T, 3 * H * D, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
    gates = RAGates(H, D).cuda()
    with torch.no_grad():
        gates.logits.add_(torch.randn(H, 3, device="cuda", generator=g) * 0.5)
        gates.u.normal_(0.0, 0.3, generator=g)

    o = run_canonical_ra(*heads(qkv, H), gates, D ** -0.5, backend="triton", reciprocal=reciprocal)
    do = torch.randn(o.shape, device="cuda", generator=g).to(o.dtype)
    grads = torch.autograd.grad(o, [qkv, gates.logits, gates.u], do)
    gates64 = RAGates(H, D).cuda().double()
    gates64.load_state_dict(gates.state_dict())
    qkv64 = qkv.detach().double().requires_grad_()
    ref = ra_definition(*heads(qkv64, H), gates64, D ** -0.5, rec_mult=1.0 if reciprocal else 0.0)
    ref_grads = torch.autograd.grad(ref, [qkv64, gates64.logits, gates64.u], do.double())
    errs = {"o": rel_err(o, ref)} | {n: rel_err(a, b) for n, a, b in zip(("dqkv", "dlogits", "du"), grads, ref_grads)}
    # the gates' gradients are sums over B*T of bf16-rounded tiles: allow twice
    assert max(errs["o"], errs["dqkv"]) < BF16_TOL and max(errs["dlogits"], errs["du"]) < 2 * BF16_TOL, errs


class _CountingCache(dict):
    """launching._EAGER_BIN that counts its hits (launches that called a kept binary)."""
    hits = 0

    def get(self, key, default=None):
        found = super().get(key, default)
        self.hits += found is not None
        return found


@pytest.mark.parametrize("route", ["tied", "untied", "gated"])
def test_eager_calls_after_the_first_launch_kept_binaries_with_the_same_results(route, monkeypatch):
    """An eager call's first launch of a key autotunes; the next goes through Triton's dispatch
    and keeps the binary; from the third on every launch (forward, delta, dkdv, dq, and on the
    gated route the three gate kernels) calls the kept binary (launching._EAGER_BIN). Outputs and
    gradients stay the same bit for bit throughout."""
    from rabench.attention.gates import RAGates
    from rabench.kernels import eager_gated, launching, tuning
    from rabench.kernels import ra_attention

    monkeypatch.setattr(launching, "_EAGER_BIN", _CountingCache())
    monkeypatch.setattr(launching, "_EAGER_CFG", {})
    tuning.force_backward("two-pass")  # bitwise repeatable
    try:
        B, H, T, D = 2, 12, 1024, 64
        g = torch.Generator(device="cuda").manual_seed(0)
        qkv = torch.randn(B, T, 3 * H * D, device="cuda", generator=g).to(torch.bfloat16).requires_grad_()
        u = (torch.randn(H, D, device="cuda", generator=g) * 0.3).requires_grad_()
        s1 = torch.full((H,), 0.1, device="cuda", requires_grad=True)
        s2 = torch.full((H,), 0.02, device="cuda", requires_grad=True)
        gates = RAGates(H, D).cuda()
        do = torch.randn(B, H, T, D, device="cuda", generator=g).to(torch.bfloat16)

        def call():
            q, k, v = heads(qkv, H)
            if route == "gated":
                o = eager_gated.ra_gated_eager(q, k, v, gates.logits, gates.u, D ** -0.5)
                return [o.detach()] + list(torch.autograd.grad(o, [qkv, gates.logits, gates.u], do))
            q2, k2 = (None, None) if route == "tied" else (k[..., :16], q[..., :16])
            o = ra_attention(q, k, q2, k2, v, u, scale1=s1, scale2=s2, tied=route == "tied")
            return [o.detach()] + list(torch.autograd.grad(o, [qkv, u, s1, s2], do))
        first = call()
        second = call()
        hits_before = launching._EAGER_BIN.hits
        third = call()
    finally:
        tuning.force_backward(None)
    launches = 7 if route == "gated" else 4  # gated: the gate forward and the gate gradient's two
    assert launching._EAGER_BIN.hits - hits_before == launches  # no dispatch left
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b) and torch.equal(a, c)


def _loss_and_grads(model, x, y, run=None):
    """Loss of `run` (the model itself, or a compiled wrapper of it) and the model's gradients, keyed
    by the model's own parameter names (a compiled wrapper prefixes them with `_orig_mod.`)."""
    _, loss = (model if run is None else run)(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_model_equals_eager_model():
    """A small GPT with ra-triton: torch.compile (inductor launching the kernels itself) gives the
    eager model's loss and gradients.  float32 weights and activations; the kernels' float32 dot
    products run in tf32 and inductor may pick other tile configs than the eager autotuner, so
    the two agree to tf32 level (1e-2), not to float32's; a wrong gradient path is off by O(1)."""
    from rabench.model import GPT, preset

    torch.manual_seed(0)
    model = GPT(preset("tiny"), "ra-triton").cuda()
    x = torch.randint(0, 50257, (4, 64), device="cuda")
    y = torch.randint(0, 50257, (4, 64), device="cuda")
    loss_e, grads_e = _loss_and_grads(model, x, y)
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    loss_c, grads_c = _loss_and_grads(model, x, y, run=compiled)
    assert torch.allclose(loss_c, loss_e, rtol=1e-3), (loss_c, loss_e)
    assert grads_c.keys() == grads_e.keys()
    errs = {n: rel_err(grads_c[n], grads_e[n]) for n in grads_e}
    bad = {n: e for n, e in errs.items() if e > 1e-2}
    assert not bad, bad
    assert any(".core.gates" in n for n in grads_e)  # the gates' gradients reach through the kernel


@pytest.mark.slow  # two gpt compiles per mode, about a minute each on an H100 host
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_train_step_tracks_eager(mode):
    """TrainStep compiled (with a compiled optimizer update) follows the eager step's losses."""
    from rabench.model import GPT, preset
    from rabench.training.step import TrainStep, make_optimizer

    dev = torch.device("cuda")
    idx = torch.randint(0, 50257, (4, 65), device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    data = [(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())]

    def losses(compile_mode, impl, compile_opt):
        torch.manual_seed(0)
        model = GPT(preset("tiny"), "ra-triton").to(dev)
        step = TrainStep(model, make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), dev, impl=impl), dev, 1.0,
                         compile_mode=compile_mode, compile_optimizer=compile_opt)
        step.warm_up(data, passes=3)
        return torch.stack([step.run(data, 1e-3) for _ in range(4)]).tolist()

    torch._dynamo.reset()
    eager = losses("none", "fused", False)
    compiled = losses(mode, "foreach", True)
    assert compiled == pytest.approx(eager, rel=2e-2)  # bf16 autocast: both round differently
    assert eager[-1] < eager[0]


@pytest.mark.slow  # two gpt compiles, about a minute each on an H100 host
def test_amortized_under_cuda_graphs_tracks_eager_through_refresh_and_reuse_steps():
    """ra-amortized compiled with CUDA graphs (reduce-overhead) follows its eager losses over refresh
    and reuse steps: the cached pattern a refresh writes is the one the replayed reuse graph reads."""
    from rabench import attention
    from rabench.model import GPT, preset
    from rabench.training.step import TrainStep, make_optimizer

    dev = torch.device("cuda")
    idx = torch.randint(0, 50257, (4, 65), device=dev, generator=torch.Generator(device=dev).manual_seed(0))
    data = [(idx[:, :-1].contiguous(), idx[:, 1:].contiguous())]
    options = attention.resolve_options("ra-amortized", {"every": 2})

    def losses(compile_mode):
        torch.manual_seed(0)
        model = GPT(preset("tiny"), "ra-amortized", options).to(dev)
        step = TrainStep(model, make_optimizer(model, 1e-3, 0.1, (0.9, 0.95), dev), dev, 1.0, compile_mode=compile_mode)
        step.warm_up(data, passes=3)
        out = []
        for i in range(6):
            out.append(step.run(data, 1e-3, step=i))
        return torch.stack(out).tolist()

    torch._dynamo.reset()
    eager = losses("none")
    compiled = losses("reduce-overhead")
    assert compiled == pytest.approx(eager, rel=2e-2)


_TUNE_TWICE = r"""
import json, torch
from triton.runtime.autotuner import Autotuner
from rabench.kernels import tuning, ra_attention
trials = []
timed = Autotuner._bench
Autotuner._bench = lambda self, *a, **kw: trials.append(1) or timed(self, *a, **kw)
ins = [torch.randn(1, 2, 256, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(5)]
for mode in ("two-pass", "one-pass"):
    tuning.force_backward(mode)
    ra_attention(*ins, None).sum().backward()
torch.cuda.synchronize()
chosen = {name: sorted(str(c) for c in tuner.cache.values()) for (name, _), tuner in tuning._tuned.items()}
print(json.dumps({"trials": len(trials), "chosen": chosen}))
"""


def test_autotune_winners_are_read_back_from_disk_by_a_new_process(tmp_path):
    """A suite runs each run in a new process: the second process with the same Triton cache
    finds every kernel's winner on disk (no timing trial) and picks the first one's configs."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))

    def tune() -> dict:
        done = subprocess.run([sys.executable, "-c", _TUNE_TWICE], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first, second = tune(), tune()
    assert sorted(first["chosen"]) == ["dkdv", "dq", "fwd", "onepass"], first
    assert first["trials"] > 0 and second["trials"] == 0, (first["trials"], second["trials"])
    assert second["chosen"] == first["chosen"]
