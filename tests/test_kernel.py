"""The fused RA Triton kernel, run on the CPU through Triton's interpreter.

Checks output and every gradient against a float64 reference (rabench.kernels.reference)
on fresh random inputs, with every kernel output poisoned (NaN) before the kernel writes it.
Tests that take the `backward` fixture run once per backward: one-pass (row side by atomics)
and two-pass (a dq kernel, no atomics).

Importing this module changes nothing global: tests/conftest.py switches the interpreter on
only on machines without a CUDA GPU.  There these tests run; on a GPU machine they are skipped
and tests/test_gpu.py runs the compiled kernels instead.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from rabench.errors import RabenchError
from rabench.kernels import ra_attention, ra_attention_available
from rabench.kernels import eager_gated, launching, op as kop, tuning
from rabench.kernels import ra_flash
from rabench.kernels.reference import ra_reference
from reference import heads

pytestmark = [pytest.mark.skipif(not ra_flash.INTERPRET,
                                 reason="interpreter tests (CPU tensors); tests/test_gpu.py covers GPUs"),
              pytest.mark.usefixtures("poison_kernel_outputs")]  # unwritten outputs show up as NaN

FP32_TOL = 1e-5  # float32 arithmetic lands far under this (seen: ~1e-7)
LOW_TOL = 1e-2   # bf16 / fp16 operands (METHOD.md: between 1e-3 and 1e-2)


@pytest.fixture(params=tuning.BACKWARD_MODES)
def backward(request):
    """The test runs once per backward mode; both must give the reference's gradients."""
    tuning.force_backward(request.param)
    yield request.param
    tuning.force_backward(None)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    assert a.shape == ref.shape, (a.shape, ref.shape)
    assert torch.isfinite(a).all(), "non-finite values in kernel result"
    diff = (a.double() - ref.double()).norm().item()
    ref_norm = ref.double().norm().item()
    # an all-zero reference (dq, dk, dbias at T=1: a one-element softmax is constant) has no
    # relative error; there the absolute error (rounding noise) is what is compared
    return diff / ref_norm if ref_norm > 1e-12 else diff


def make_inputs(B, H, T, D1, D2, Dv, dtype, rec=True, bias=True, gen=None):
    """Fresh random inputs at the scale the model feeds the kernel (scores of order 1)."""
    def r(*shape, scale=1.0):
        x = torch.randn(*shape, generator=gen) * scale
        return x.to(dtype).requires_grad_()
    q1 = r(B, H, T, D1, scale=D1 ** -0.5)
    k1 = r(B, H, T, D1)
    q2 = r(B, H, T, D2, scale=0.5 * D2 ** -0.5) if rec else None
    k2 = r(B, H, T, D2) if rec else None
    v = r(B, H, T, Dv)
    b = (torch.randn(B, H, T, generator=gen) * 0.5).requires_grad_() if bias else None
    return q1, k1, q2, k2, v, b


def check(B, H, T, D1, D2, Dv, dtype, rec=True, bias=True, band=None, tol=None):
    gen = torch.Generator().manual_seed(torch.randint(0, 2**31, ()).item())
    tol = tol or (FP32_TOL if dtype == torch.float32 else LOW_TOL)
    ins = make_inputs(B, H, T, D1, D2, Dv, dtype, rec, bias, gen)
    o = ra_attention(*ins, band=band)
    assert o.dtype == dtype and o.shape == (B, H, T, Dv)
    do = torch.randn(o.shape, generator=gen).to(dtype)
    present = [x for x in ins if x is not None]
    grads = torch.autograd.grad(o, present, do)

    ins64 = [x.detach().double().requires_grad_() if x is not None else None for x in ins]
    ref = ra_reference(*ins64, band=band)
    ref_grads = torch.autograd.grad(ref, [x for x in ins64 if x is not None], do.double())

    errs = {"o": rel_err(o, ref)}
    names = [n for n, x in zip(("q1", "k1", "q2", "k2", "v", "bias"), ins) if x is not None]
    for n, g, gr, x in zip(names, grads, ref_grads, present):
        assert g.dtype == x.dtype and g.shape == x.shape, n
        errs["d" + n] = rel_err(g, gr)
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, f"rel. errors over {tol}: {bad} (all: {errs})"
    return errs


# (B, H, T, D1, D2, Dv, rec, bias, band)
FP32_CASES = [
    (1, 2, 1, 16, 16, 16, True, True, None),        # a single token
    (2, 1, 17, 16, 16, 16, True, True, None),       # ragged: 17 = 16 + 1
    (1, 2, 50, 32, 32, 32, True, False, None),      # no bias
    (1, 1, 100, 64, 64, 64, True, True, None),      # several blocks, ragged end
    (1, 2, 50, 32, 16, 32, True, True, None),       # low rank: D2 != D1
    (1, 2, 50, 32, 32, 32, True, True, 8),          # local reciprocity, band < block
    (1, 1, 100, 32, 16, 32, True, True, 40),        # band spanning several blocks
    (1, 1, 100, 16, 16, 16, True, False, 1),        # band = 1: only the diagonal
    (1, 2, 50, 32, 32, 32, False, True, None),      # no reciprocal term
    (1, 1, 17, 16, 16, 16, False, False, None),     # plain causal attention
    (1, 1, 40, 24, 40, 20, True, True, None),       # head dims that are not powers of two
]


@pytest.mark.parametrize("B,H,T,D1,D2,Dv,rec,bias,band", FP32_CASES)
@pytest.mark.usefixtures("backward")
def test_fp32_matches_float64_reference(B, H, T, D1, D2, Dv, rec, bias, band):
    check(B, H, T, D1, D2, Dv, torch.float32, rec, bias, band)


@pytest.mark.parametrize("dtype,T,D1,D2,band", [
    (torch.bfloat16, 50, 64, 64, None),
    (torch.bfloat16, 100, 32, 16, 8),
    (torch.float16, 50, 32, 32, None),
])
@pytest.mark.usefixtures("backward")
def test_low_precision_within_bounds(dtype, T, D1, D2, band):
    check(1, 2, T, D1, D2, D1, dtype, True, True, band)


@pytest.mark.parametrize("scale", [30.0, 100.0])
@pytest.mark.usefixtures("backward")
def test_saturated_softmax_matches_reference(scale):
    """Scores of order `scale` (a near one-hot softmax, as trained attention can grow): the online
    softmax's running maximum must keep every exp finite and the gradients exact in both terms.
    fp32 error grows with the scores' size (seen: 3e-6 at 30, 6e-6 at 100), so the bound is 2e-5."""
    gen = torch.Generator().manual_seed(3)
    ins = make_inputs(1, 2, 100, 32, 32, 32, torch.float32, True, True, gen)
    with torch.no_grad():
        ins[0].mul_(scale)  # q1: the standard scores
        ins[2].mul_(scale)  # q2: the reciprocal ones
    o = ra_attention(*ins)
    do = torch.randn(o.shape, generator=gen)
    grads = torch.autograd.grad(o, ins, do)
    ins64 = [x.detach().double().requires_grad_() for x in ins]
    ref = ra_reference(*ins64)
    ref_grads = torch.autograd.grad(ref, ins64, do.double())
    assert rel_err(o, ref) < 2e-5
    for name, g, gr in zip(("q1", "k1", "q2", "k2", "v", "bias"), grads, ref_grads):
        assert rel_err(g, gr) < 2e-5, name


def test_band_at_least_T_equals_no_band():
    T = 50
    ins = make_inputs(1, 2, T, 32, 32, 32, torch.float32)
    o_none = ra_attention(*ins, band=None)
    o_T = ra_attention(*ins, band=T)
    o_big = ra_attention(*ins, band=10 * T)
    assert torch.equal(o_none, o_T) and torch.equal(o_none, o_big)
    o_small = ra_attention(*ins, band=T - 1)  # i - j = T - 1 only at (T-1, 0): differs
    assert not torch.equal(o_none, o_small)


def test_band_equals_reference_with_band():
    # the reciprocal term really is masked: compare with the reference *without* the band
    ins = make_inputs(1, 1, 50, 16, 16, 16, torch.float32)
    o = ra_attention(*ins, band=4)
    ins64 = [x.detach().double() if x is not None else None for x in ins]
    assert rel_err(o, ra_reference(*ins64, band=4)) < FP32_TOL
    assert rel_err(o, ra_reference(*ins64, band=None)) > 1e-3


@pytest.mark.usefixtures("backward")
def test_noncontiguous_inputs():
    # (B, T, H, D) storage viewed as (B, H, T, D), as a model's qkv split gives
    B, H, T, D = 2, 3, 33, 16
    def r(D_):
        return torch.randn(B, T, H, D_).transpose(1, 2).requires_grad_()
    q1, k1, q2, k2, v = r(D), r(D), r(D), r(D), r(D)
    bias = torch.randn(B, T, H).transpose(1, 2).requires_grad_()
    ins = [q1, k1, q2, k2, v, bias]
    assert not q1.is_contiguous()
    o = ra_attention(q1, k1, q2, k2, v, bias)
    do = torch.randn_like(o)
    g = torch.autograd.grad(o, ins, do)
    ins64 = [x.detach().double().requires_grad_() for x in ins]
    ref = ra_reference(*ins64)
    gr = torch.autograd.grad(ref, ins64, do.double())
    assert rel_err(o, ref) < FP32_TOL
    for a, b in zip(g, gr):
        assert rel_err(a, b) < FP32_TOL


def test_canonical_ra_matches_open_coded():
    """Canonical RA folded into the kernel's inputs equals the formula of ra-math.md."""
    B, H, T, D = 1, 2, 40, 32
    c = D ** -0.5
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64) for _ in range(3))
    u = torch.randn(H, D, dtype=torch.float64) * 0.3
    w_std, w_rec, w_disc = torch.softmax(torch.tensor([2.2, 0.6, 0.1], dtype=torch.float64), 0)
    d = torch.einsum("bhtd,hd->bht", k, u)
    S = c * q @ k.transpose(-1, -2)
    L = w_std * S + w_rec * S.transpose(-1, -2) + w_disc * d[..., None, :]
    L = L.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    ref = torch.softmax(L, -1) @ v
    f = torch.float32
    o = ra_attention((w_std * c * q).to(f), k.to(f), (w_rec * c * k).to(f), q.to(f), v.to(f),
                     (w_disc * d).to(f))
    assert rel_err(o, ref) < FP32_TOL


def test_errors_are_rabench_errors():
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(RabenchError):
        ra_attention(q, q, q, None, q, None)           # q2 without k2
    with pytest.raises(RabenchError):
        ra_attention(q, q, None, None, q, torch.randn(1, 1, 7))  # wrong bias shape
    with pytest.raises(RabenchError):
        ra_attention(q, q, None, None, q, None, band=0)
    m = torch.randn(1, 1, 8, 16, device="meta")
    with pytest.raises(RabenchError):
        ra_attention(m, m, None, None, m, None)         # unsupported device


def test_available_under_interpreter():
    assert ra_attention_available() == (True, "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU makes the kernel available")
def test_unavailable_without_gpu_or_interpreter():
    code = (
        "import torch\n"
        "from rabench.errors import RabenchError\n"
        "from rabench.kernels import ra_attention, ra_attention_available\n"
        "ok, why = ra_attention_available()\n"
        "assert not ok and 'TRITON_INTERPRET=1' in why and '\\n' not in why, why\n"
        "q = torch.randn(1, 1, 4, 16)\n"
        "try:\n"
        "    ra_attention(q, q, None, None, q, None)\n"
        "except RabenchError as e:\n"
        "    assert str(e) == why, e\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.parametrize("tied", [False, True, "tile bias"])
@pytest.mark.usefixtures("backward")
def test_custom_op_registration(tied):
    q1, k1, q2, k2, v, b = make_inputs(1, 2, 17, 16, 16, 16, torch.float32)
    if tied is True:  # canonical RA's form: scales, the reciprocal pair tied to the first
        s1, s2 = (torch.rand(2) + 0.5).requires_grad_(), (torch.rand(2) + 0.5).requires_grad_()
        args = (q1, k1, None, None, v, b, s1, s2, 0, True, None)
    elif tied:  # ra-amortized's reuse step: no reciprocal term, a tile bias
        args = (q1, k1, None, None, v, b, None, None, 0, False, torch.randn(2, 17, 17))
    else:
        args = (q1, k1, q2, k2, v, b, None, None, 0, False, None)
    torch.library.opcheck(torch.ops.rabench.ra_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_autograd_registration"))


@pytest.mark.parametrize("rec", [True, False, "tied"])
@pytest.mark.usefixtures("backward")
def test_torch_compile_traces_without_graph_breaks(rec):
    torch._dynamo.reset()
    ins = make_inputs(1, 2, 20, 16, 16, 16, torch.float32, rec=rec is True)
    sc = torch.tensor([0.7, 1.3]).requires_grad_()

    def f(q1, k1, q2, k2, v, b):
        if rec == "tied":  # canonical RA's call: scales in the kernel, q2 = k1, k2 = q1
            y = ra_attention(q1 * 1.5, k1, None, None, v, b, scale1=sc, scale2=sc * 0.5,
                             tied=True)
        else:
            y = ra_attention(q1 * 1.5, k1, q2, k2, v, b, band=None)
        return (y * y).sum()

    cf = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = cf(*ins)
    present = [x for x in ins if x is not None]
    g = torch.autograd.grad(loss, present)
    loss_e = f(*ins)
    ge = torch.autograd.grad(loss_e, present)
    assert torch.allclose(loss, loss_e, rtol=1e-5)
    for a, b in zip(g, ge):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rec,band,tied", [(True, None, False), (True, None, True),
                                           (True, 5, False), (True, 5, True), (False, None, False)])
@pytest.mark.usefixtures("backward")
def test_in_kernel_scales_on_qkv_views_match_reference(rec, band, tied):
    """scale1/scale2 applied inside the kernel, on strided views of one (B, T, 3C) tensor (the
    model's qkv projection), equal the reference on scaled copies: output and every gradient,
    the per-head scales' included.  tied: canonical RA's q2 = k, k2 = q passed as tied=True,
    whose q and k gradients the dq kernel assembles (T = 37 spans several blocks of every
    kernel, so each row block reads dkdv's rows written by other programs)."""
    B, H, T, D = 2, 3, 37, 16
    torch.manual_seed(11)
    qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float32).requires_grad_()
    q, k, v = heads(qkv, H)
    s1 = (torch.rand(H) + 0.2).requires_grad_()
    s2 = (torch.rand(H) * 0.5).requires_grad_()
    bias = (torch.randn(B, H, T) * 0.5).requires_grad_()
    assert not q.is_contiguous() and q.stride(-1) == 1
    if tied:
        o = ra_attention(q, k, None, None, v, bias, band=band, scale1=s1, scale2=s2, tied=True)
    else:
        o = ra_attention(q, k, k if rec else None, q if rec else None, v, bias, band=band,
                         scale1=s1, scale2=s2 if rec else None)
    do = torch.randn_like(o)
    leaves = [qkv, s1, bias] + ([s2] if rec else [])
    g = torch.autograd.grad(o, leaves, do)

    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    qkv64, s164, b64 = leaves64[:3]
    q_, k_, v_ = heads(qkv64, H)
    q1 = q_ * s164.view(1, H, 1, 1)
    q2 = k_ * leaves64[3].view(1, H, 1, 1) if rec else None
    ref = ra_reference(q1, k_, q2, q_ if rec else None, v_, b64, band=band)
    gr = torch.autograd.grad(ref, leaves64, do.double())
    assert rel_err(o, ref) < FP32_TOL
    for name, a, b in zip(("qkv", "scale1", "bias", "scale2"), g, gr):
        # a scale's gradient sums B*T*D products with cancellation: fp32 lands up to ~1e-5 off
        assert rel_err(a, b) < (5 * FP32_TOL if name.startswith("scale") else FP32_TOL), name


@pytest.mark.parametrize("tied,band,scaled", [(False, None, True), (True, None, True), (True, 5, True),
                                               (True, None, False)])
@pytest.mark.usefixtures("backward")
def test_bias_from_key_tiles_matches_reference(tied, band, scaled):
    """bias given as a per-head vector u (H, D): the kernels compute bias_j = k1_j . u from their
    raw key tiles, add the bias path's dbias_j u to dk1 themselves and return dL/du.  Output and
    every gradient (qkv, u, the scales) against float64 on strided views of one qkv tensor."""
    torch.manual_seed(7)
    B, H, T, D = 2, 3, 37, 16
    qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float32).requires_grad_()
    q, k, v = heads(qkv, H)
    u = (torch.randn(H, D) * 0.3).requires_grad_()
    scales = [(torch.rand(H) + 0.2).requires_grad_(), (torch.rand(H) * 0.5).requires_grad_()] if scaled else []
    s1, s2 = scales if scaled else (None, None)
    if tied:
        o = ra_attention(q, k, None, None, v, u, band=band, scale1=s1, scale2=s2, tied=True)
    else:
        o = ra_attention(q, k, k, q, v, u, band=band, scale1=s1, scale2=s2)
    do = torch.randn_like(o)
    leaves = [qkv, u] + scales
    g = torch.autograd.grad(o, leaves, do)

    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    q_, k_, v_ = heads(leaves64[0], H)
    q1, q2 = (q_ * leaves64[2].view(1, H, 1, 1), k_ * leaves64[3].view(1, H, 1, 1)) if scaled else (q_, k_)
    bias = torch.einsum("bhtd,hd->bht", k_, leaves64[1])  # d_j = k_j . u
    ref = ra_reference(q1, k_, q2, q_, v_, bias, band=band)
    gr = torch.autograd.grad(ref, leaves64, do.double())
    assert rel_err(o, ref) < FP32_TOL
    for name, a, b in zip(("qkv", "u", "scale1", "scale2"), g, gr):
        assert rel_err(a, b) < (5 * FP32_TOL if name != "qkv" else FP32_TOL), name


def test_bias_shape_is_checked_in_either_form():
    q = torch.randn(1, 2, 8, 16)
    for bad in (torch.randn(1, 2, 7), torch.randn(2, 15), torch.randn(16)):
        with pytest.raises(RabenchError, match=r"bias must be \(B, H, T\)=\(1, 2, 8\) or \(H, D1\)=\(2, 16\)"):
            ra_attention(q, q, None, None, q, bad)


def test_scale_arguments_are_checked():
    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(RabenchError, match="scale2 needs scale1"):
        ra_attention(q, q, q, q, q, None, scale2=torch.ones(2))
    with pytest.raises(RabenchError, match="pass scale2"):
        ra_attention(q, q, q, q, q, None, scale1=torch.ones(2))
    with pytest.raises(RabenchError, match="scale1 must be"):
        ra_attention(q, q, None, None, q, None, scale1=torch.ones(3))
    with pytest.raises(RabenchError, match="pass scale2"):
        ra_attention(q, q, None, None, q, None, scale1=torch.ones(2), tied=True)
    with pytest.raises(RabenchError, match="pass q2 = k2 = None"):
        ra_attention(q, q, q, q, q, None, tied=True)


@pytest.mark.parametrize("tied", [False, True])
def test_eager_path_equals_the_op_bit_for_bit(tied):
    """Eager calls skip torch.library's dispatch (op._EagerRA); the op (what torch.compile
    traces) and the eager path run the same launchers and formula, so they agree exactly."""
    from rabench.kernels import op

    q1, k1, q2, k2, v, b = make_inputs(2, 2, 23, 16, 16, 16, torch.float32)
    s1, s2 = (torch.rand(2) + 0.5).requires_grad_(), (torch.rand(2) + 0.5).requires_grad_()
    tile = torch.randn(2, 23, 23)
    args = (q1, k1, None, None, v, b, s1, s2, 0, True, None) if tied else (q1, k1, q2, k2, v, b, s1, s2, 3, False, tile)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    results = []
    for attend in (torch.ops.rabench.ra_fwd.default, op._EagerRA.apply):
        o, _ = attend(*args)
        results.append((o.detach(), torch.autograd.grad((o * o).sum(), leaves)))
    (o_op, g_op), (o_eager, g_eager) = results
    assert torch.equal(o_op, o_eager)
    for a, c in zip(g_op, g_eager):
        assert torch.equal(a, c)


def test_backward_mode_is_two_pass_unless_forced(monkeypatch):
    """Two-pass (dkdv then dq, no atomics) by default, deterministic flag or not;
    force_backward("one-pass") selects the dkdv kernel alone with its atomics."""
    launched = []
    launch = launching.launch
    monkeypatch.setattr(launching, "launch", lambda name, *a: (launched.append(name), launch(name, *a)))
    ins = make_inputs(1, 1, 17, 16, 16, 16, torch.float32)

    def backward_kernels():
        launched.clear()
        o = ra_attention(*ins)
        torch.autograd.grad(o, [x for x in ins if x is not None], torch.ones_like(o))
        return launched[1:]  # the forward's launch first

    assert tuning.backward_mode() == "two-pass" and backward_kernels() == ["dkdv", "dq"]
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert tuning.backward_mode() == "two-pass" and backward_kernels() == ["dkdv", "dq"]
    finally:
        torch.use_deterministic_algorithms(was)
    tuning.force_backward("one-pass")
    try:
        assert backward_kernels() == ["onepass"]
    finally:
        tuning.force_backward(None)
    tuning.force_backward("two-pass")
    try:
        assert backward_kernels() == ["dkdv", "dq"]
    finally:
        tuning.force_backward(None)
    with pytest.raises(RabenchError, match="one-pass, two-pass or None"):
        tuning.force_backward("atomic")


@pytest.mark.parametrize("tied", [False, True])
def test_gradients_in_bthd_memory(backward, tied):
    """Every gradient comes back as a (B, H, T, D) view of (B, T, H, D) memory in the inputs'
    dtype (the one-pass casts of its float32 accumulators included), the layout the model's
    qkv assembly expects."""
    B, H, T, D = 2, 3, 20, 16
    q1, k1, q2, k2, v, _ = make_inputs(B, H, T, D, D, D, torch.bfloat16, bias=False)
    q2, k2 = (None, None) if tied else (q2, k2)
    o, lse = kop.ra_forward(q1, k1, q2, k2, v, None, None, None, 0, tied)
    grads = kop.ra_backward(torch.randn_like(o), q1, k1, q2, k2, v, None, None, None, o, lse, 0,
                            tied)
    present = (grads[0], grads[1], grads[4]) if tied else grads[:5]
    for g in present:
        assert g.shape == (B, H, T, D) and g.dtype == torch.bfloat16, backward
        assert g.transpose(1, 2).is_contiguous(), (backward, g.stride())


@pytest.mark.usefixtures("backward")
@pytest.mark.parametrize("tied", [False, True])
def test_every_launch_names_every_constexpr(monkeypatch, tied):
    """Inductor's launcher for a user-defined kernel fills in no defaults: a constexpr left to
    its default runs eagerly and here, then fails under torch.compile on a GPU ("launcher()
    missing 2 required positional arguments"). So each launch names every constexpr but the
    config's block sizes and INTERP, which both launch paths add."""
    import inspect

    missing = {}
    launch = launching.launch

    def spy(name, grid_rows, bh, args, meta):
        params = inspect.signature(tuning.RAW[name].fn).parameters.values()
        constexprs = {p.name for p in params if "constexpr" in str(p.annotation)}
        missing[name] = constexprs - set(meta) - {"BLOCK_M", "BLOCK_N", "INTERP"}
        return launch(name, grid_rows, bh, args, meta)

    monkeypatch.setattr(launching, "launch", spy)
    q1, k1, q2, k2, v, _ = make_inputs(1, 2, 17, 16, 16, 16, torch.float32)
    s1, s2 = (torch.rand(2) + 0.5).requires_grad_(), (torch.rand(2) + 0.5).requires_grad_()
    u = torch.randn(2, 16, requires_grad=True)
    o = ra_attention(q1, k1, None if tied else q2, None if tied else k2, v, u, scale1=s1, scale2=s2,
                     tied=tied)
    o.sum().backward()
    assert len(missing) >= 2 and not any(missing.values()), missing


_WRITTEN_ARGS_CODE = """
import json, torch, triton
from triton.backends.compiler import GPUTarget
try:
    from torch._higher_order_ops.triton_kernel_wrap import identify_accessed_tensors
except ImportError:
    raise SystemExit(3)

class Hopper:  # TTIR for sm_90 without a GPU: the analysis never launches anything
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

triton.runtime.driver.set_active(Hopper())
from rabench.kernels import eager_gated, tuning
from rabench.kernels import ra_flash as K

B, H, T, D = 1, 2, 64, 64
F32 = {"BIAS", "SC1", "SC2", "LSE", "DELTA", "DBIAS", "BROW", "DQ1A", "DQ2A", "DSC"}
SHAPES = {"BIAS": (H, D), "SC1": (H,), "SC2": (H,), "LSE": (B, H, T), "DELTA": (B, H, T),
          "DBIAS": (B, H, T), "BROW": (1,), "DQ1A": (B, T, H, D), "DQ2A": (B, T, H, D),
          "DSC": (B, H, T, 2), "TBIAS": (H, T, T)}
out = {}
for mode, tied, rec, tile in (("onepass", True, True, False), ("onepass", False, True, False),
                              ("onepass", False, False, False), ("dkdv", False, True, False),
                              ("dkdv", False, False, True)):
    kw = dict(H=H, T=T, band=0, D1=D, BD1=D, D2=D, BD2=D, DV=D, BDV=D, HAS_REC=rec,
              HAS_BAND=False, HAS_BIAS=2, HAS_SCALE=True, HAS_TBIAS=tile,
              ROW_ATOMIC=mode == "onepass", TIED=tied, INTERP=False)
    for n in K._ra_dkdv_kernel.arg_names:
        if n not in kw:
            kw[n] = (64 if n.startswith("s") and not n.startswith("SC") else
                     torch.zeros(SHAPES.get(n, (B, H, T, D)),
                                 dtype=torch.float32 if n in F32 else torch.bfloat16))
    acc = identify_accessed_tensors(tuning.tuned_kernel(mode, "small"), kw, {})
    out[f"{mode} tied={tied} rec={rec}" + (" tile bias" if tile else "")] = sorted(
        d.name for d in acc.read_writes.writes)
print(json.dumps(out))
"""


def test_compile_sees_each_written_kernel_argument():
    """torch.compile functionalises a Triton kernel call by the arguments its TTIR writes
    (torch.library.wrap_triton's analysis): the one-pass kernel's atomics must mark its float32
    accumulators as written, and the outputs a mode leaves alone (scratch stand-ins) and the
    tile bias as not.
    Run on the sm_90 TTIR in a subprocess without the interpreter (no GPU needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", _WRITTEN_ARGS_CODE], env=env, capture_output=True,
                         text=True)
    if res.returncode == 3:
        pytest.skip("this torch has no identify_accessed_tensors")
    assert res.returncode == 0, res.stderr[-3000:]
    written = json.loads(res.stdout.strip().splitlines()[-1])
    assert written == {
        "onepass tied=True rec=True": ["DBIAS", "DQ1A", "DQ2A", "DSC", "DVo"],
        "onepass tied=False rec=True": ["DBIAS", "DK1", "DK2", "DQ1A", "DQ2A", "DSC", "DVo"],
        "onepass tied=False rec=False": ["DBIAS", "DK1", "DQ1A", "DSC", "DVo"],
        "dkdv tied=False rec=True": ["BROW", "DBIAS", "DK1", "DK2", "DVo"],
        "dkdv tied=False rec=False tile bias": ["BROW", "DBIAS", "DK1", "DVo"],  # R is read only
    }, written


@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 32), (16, 64)])
@pytest.mark.parametrize("tied", [False, True])
def test_one_pass_tile_shapes(monkeypatch, block_m, block_n, tied):
    """The one-pass kernel at other tile shapes than the interpreter's default (square tiles and
    four query blocks per key block, as GPU configs have), with a band that ends inside a block,
    scales and the bias vector: output and every gradient against float64."""
    monkeypatch.setitem(tuning.INTERP_BLOCKS, "onepass", dict(BLOCK_M=block_m, BLOCK_N=block_n))
    tuning.force_backward("one-pass")
    try:
        torch.manual_seed(block_m * block_n + tied)
        B, H, T, D = 1, 2, 45, 16
        qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float32).requires_grad_()
        q, k, v = heads(qkv, H)
        u = (torch.randn(H, D) * 0.3).requires_grad_()
        s1, s2 = (torch.rand(H) + 0.2).requires_grad_(), (torch.rand(H) * 0.5).requires_grad_()
        if tied:
            o = ra_attention(q, k, None, None, v, u, band=21, scale1=s1, scale2=s2, tied=True)
        else:
            o = ra_attention(q, k, k, q, v, u, band=21, scale1=s1, scale2=s2)
        do = torch.randn_like(o)
        leaves = [qkv, u, s1, s2]
        g = torch.autograd.grad(o, leaves, do)
    finally:
        tuning.force_backward(None)
    l64 = [x.detach().double().requires_grad_() for x in leaves]
    q_, k_, v_ = heads(l64[0], H)
    bias = torch.einsum("bhtd,hd->bht", k_, l64[1])
    ref = ra_reference(q_ * l64[2].view(1, H, 1, 1), k_, k_ * l64[3].view(1, H, 1, 1), q_, v_, bias,
                       band=21)
    gr = torch.autograd.grad(ref, l64, do.double())
    assert rel_err(o, ref) < FP32_TOL
    for name, a, b in zip(("qkv", "u", "scale1", "scale2"), g, gr):
        assert rel_err(a, b) < (5 * FP32_TOL if name != "qkv" else FP32_TOL), name


def test_configs_fit_their_kernels_and_force_config_refuses_misfits():
    """Every autotune candidate steps its kernel's causal schedule; a pinned tile pair that does
    not (it would give wrong sums, not an error) is refused with a one-line error."""
    for size, kernels in tuning.CONFIGS.items():
        for name, cfgs in kernels.items():
            assert all(tuning._tiles_fit(name, m, n) for m, n, _, _ in cfgs), (size, name)
    with pytest.raises(RabenchError, match=r"BLOCK_N % BLOCK_M == 0, got \(32, 16, 4, 3\)"):
        tuning.force_config("onepass", (32, 16, 4, 3))
    with pytest.raises(RabenchError, match=r"BLOCK_M % BLOCK_N == 0"):
        tuning.force_config("dq", (16, 32, 4, 3))
    with pytest.raises(RabenchError, match="kernel must be one of"):
        tuning.force_config("delta", None)
    tuning.force_config("onepass", (16, 32, 4, 3))
    tuning.force_config("onepass", None)
    assert "onepass" not in tuning.FORCED


def test_autotune_winners_are_kept_on_disk(monkeypatch):
    """Every suite run is a new process: without Triton's disk cache each one re-times every
    candidate config of every kernel (tests/test_gpu.py checks the cache is read on a GPU)."""
    def fake_autotune(configs, key, **kw):
        return lambda fn: kw

    monkeypatch.setattr(tuning.triton, "autotune", fake_autotune)
    monkeypatch.setattr(tuning, "_tuned", {})
    made = {name: tuning.tuned_kernel(name, "small") for name in ("fwd", "dkdv", "dq", "onepass")}
    assert all(kw.get("cache_results") for kw in made.values()), made
    assert made["onepass"].get("reset_to_zero") == ["DQ1A", "DQ2A"], made


@pytest.mark.usefixtures("backward")
@pytest.mark.parametrize("reciprocal,band,rec_mult", [(True, None, 1.0), (True, 5, 0.5), (False, None, 1.0)])
def test_gated_eager_entry_matches_the_definition_in_float64(reciprocal, band, rec_mult):
    """kernels/gates.py's launches around the RA kernels (the gates' softmax, the scales and
    w_disc u forward; their chain rule backward) give RA's output and the gradients of q, k, v,
    the gate logits and u as the definition (attention.definitions, float64) does: q, k, v as
    views of one qkv tensor, the route eager training takes (kernel_route.run_canonical_ra)."""
    from rabench.attention.definitions import ra_definition
    from rabench.attention.gates import RAGates
    from rabench.attention.kernel_route import run_canonical_ra

    B, H, T, D = 2, 3, 37, 16
    c = D ** -0.5
    qkv = torch.randn(B, T, 3 * H * D, requires_grad=True)
    gates = RAGates(H, D)
    with torch.no_grad():
        gates.logits.add_(torch.randn(H, 3))
        gates.u.normal_(0.0, 0.5)

    o = run_canonical_ra(*heads(qkv, H), gates, c, band=band, backend="triton", rec_mult=rec_mult,
                         reciprocal=reciprocal)
    do = torch.randn_like(o)
    leaves = [qkv, gates.logits, gates.u]
    grads = torch.autograd.grad(o, leaves, do)

    gates64 = RAGates(H, D).double()
    gates64.load_state_dict(gates.state_dict())
    qkv64 = qkv.detach().double().requires_grad_()
    ref = ra_definition(*heads(qkv64, H), gates64, c, band=band, rec_mult=rec_mult if reciprocal else 0.0)
    ref_grads = torch.autograd.grad(ref, [qkv64, gates64.logits, gates64.u], do.double())
    assert rel_err(o, ref) < FP32_TOL
    for name, a, b in zip(("qkv", "logits", "u"), grads, ref_grads):
        assert rel_err(a, b) < FP32_TOL, name


def test_gated_eager_entry_serves_eager_calls_only(monkeypatch):
    """Eager calls with the gates as they are take the gated entry; a pair, a tensor rec_mult
    or torch.compile's tracing take the composed form (which the compiler fuses)."""
    from rabench.attention.gates import RAGates
    from rabench.attention.kernel_route import row_gated_pair, run_canonical_ra

    calls = []
    entry = eager_gated.ra_gated_eager
    monkeypatch.setattr(eager_gated, "ra_gated_eager", lambda *a, **k: calls.append(1) or entry(*a, **k))
    B, H, T, D = 1, 2, 17, 16
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    gates = RAGates(H, D)
    run_canonical_ra(q, k, v, gates, 0.25, backend="triton")
    run_canonical_ra(q, k, v, gates, 0.25, backend="triton", reciprocal=False)
    assert len(calls) == 2
    run_canonical_ra(q, k, v, gates, 0.25, backend="triton", rec_mult=torch.tensor(0.5))
    run_canonical_ra(q, k, v, gates, 0.25, backend="triton", pair=row_gated_pair(q, k, torch.rand(B, H, T)))
    run_canonical_ra(q, k, v, gates, 0.25, backend="torch")
    torch.compile(lambda: run_canonical_ra(q, k, v, gates, 0.25, backend="triton"),
                  backend="aot_eager", fullgraph=True)()
    assert len(calls) == 2


@pytest.mark.parametrize("form", ["reuse", "untied", "tied-band"])
@pytest.mark.usefixtures("backward")
def test_tile_bias_matches_float64(form):
    """A tile bias R (H, T, T), shared by the batch and not differentiated, added to the logits
    in every kernel: ra-amortized's reuse step ("reuse": no reciprocal term, the scale and u on
    the first pair) and with the reciprocal term.  R is a slice of a larger pattern (row stride
    != T) holding -inf above the diagonal, as the cached one does.  Output and every gradient
    against float64 logits written out here."""
    torch.manual_seed(11)
    B, H, T, D, Tc = 2, 3, 37, 16, 45
    qkv = torch.randn(B, T, 3 * H * D, dtype=torch.float32).requires_grad_()
    q, k, v = heads(qkv, H)
    u = (torch.randn(H, D) * 0.3).requires_grad_()
    s1, s2 = (torch.rand(H) + 0.2).requires_grad_(), (torch.rand(H) * 0.5).requires_grad_()
    future = torch.ones(Tc, Tc, dtype=torch.bool).triu(1)
    cached = (torch.randn(H, Tc, Tc) * 0.7).masked_fill(future, float("-inf"))
    R = cached[:, :T, :T]  # a slice: row stride Tc
    band = 5 if form == "tied-band" else None
    if form == "reuse":
        o = ra_attention(q, k, None, None, v, u, scale1=s1, tile_bias=R)
        leaves = [qkv, u, s1]
    elif form == "untied":
        o = ra_attention(q, k, k, q, v, u, scale1=s1, scale2=s2, tile_bias=R)
        leaves = [qkv, u, s1, s2]
    else:
        o = ra_attention(q, k, None, None, v, u, band=band, scale1=s1, scale2=s2, tied=True, tile_bias=R)
        leaves = [qkv, u, s1, s2]
    do = torch.randn_like(o)
    g = torch.autograd.grad(o, leaves, do)

    x = [t.detach().double().requires_grad_() for t in leaves]
    q_, k_, v_ = heads(x[0], H)
    logits = x[2].view(1, H, 1, 1) * (q_ @ k_.transpose(-1, -2))
    if form != "reuse":
        rec = x[3].view(1, H, 1, 1) * (k_ @ q_.transpose(-1, -2))  # s2 k_i . q_j
        if band is not None:
            i = torch.arange(T)
            rec = rec * ((i.view(-1, 1) - i.view(1, -1)) < band)
        logits = logits + rec
    logits = logits + torch.einsum("bhjd,hd->bhj", k_, x[1]).unsqueeze(-2)  # + k_j . u
    logits = logits + R.double().masked_fill(future[:T, :T], 0.0)
    ref = torch.softmax(logits.masked_fill(future[:T, :T], float("-inf")), dim=-1) @ v_
    gr = torch.autograd.grad(ref, x, do.double())
    assert rel_err(o, ref) < FP32_TOL
    for name, a, b in zip(("qkv", "u", "scale1", "scale2"), g, gr):
        assert rel_err(a, b) < (5 * FP32_TOL if name != "qkv" else FP32_TOL), name


def test_tile_bias_is_checked():
    q1, k1, q2, k2, v, b = make_inputs(1, 2, 9, 16, 16, 16, torch.float32)
    with pytest.raises(RabenchError, match="tile_bias must be"):
        ra_attention(q1, k1, q2, k2, v, b, tile_bias=torch.zeros(2, 9, 8))
    with pytest.raises(RabenchError, match="no gradient"):
        ra_attention(q1, k1, q2, k2, v, b, tile_bias=torch.zeros(2, 9, 9, requires_grad=True))
