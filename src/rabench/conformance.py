"""`rabench check ATTN`: the conformance checks a plug-in author runs before spending GPU time.

Each check builds what it needs on the tiny preset (2 layers, 2 heads, T = 64; a 512-word vocabulary), so the whole
run takes seconds on a CPU, and reports PASS, FAIL (with what failed) or SKIP (with why).
What they establish is what the suite's verdict relies on: the core is causal, paired starts
hold (shared weights equal sdpa's, the build is a function of the seed alone), forward and
gradients are finite in float32 and bfloat16, the float64 reference (when the core gives one)
agrees, a query scale the model folds into its projection gives the core's own math,
torch.compile traces it as one graph, it captures as a CUDA graph (on a GPU), it is
deterministic on the CPU, and a short run lowers the loss.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from rabench import attention
from rabench.errors import RabenchError
from rabench.model import GPT, preset

# the tiny preset with a small vocabulary: the checks are about the core, and a 50k-word
# embedding would make them take a minute on a CPU instead of seconds
MODEL = replace(preset("tiny"), vocab_size=512)
BATCH = 2
SEED = 7
CAUSAL_ATOL = 1e-5  # float32 noise allowed where a later token changed (kernels may block differently)
TRAIN_STEPS, TRAIN_LR, TRAIN_VOCAB = 30, 3e-3, 64
TRAIN_DROP = 0.3  # a short run must lower the loss by at least this share


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<22} {self.detail}".rstrip()


@dataclass
class CheckContext:
    ref: str
    options: dict[str, Any]
    device: torch.device

    def model(self, seed: int = SEED, attn: str | None = None) -> GPT:
        options = self.options if attn is None else None  # the options belong to the attention under test
        return GPT(MODEL, attn or self.ref, options, seed=seed).to(self.device)

    def tokens(self, seed: int = 0, batch: int = BATCH) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        cfg = MODEL
        return torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=g).to(self.device)

    def core_inputs(self, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Tensor, ...]:
        """q, k, v (B, H, T, D) and x (B, T, C) at the tiny preset's shapes, requiring grad."""
        cfg = MODEL
        g = torch.Generator().manual_seed(seed)
        shapes = [(BATCH, cfg.n_head, cfg.block_size, cfg.head_dim)] * 3 + [(BATCH, cfg.block_size, cfg.n_embd)]
        return tuple(torch.randn(s, generator=g).to(self.device, dtype).requires_grad_() for s in shapes)

    def core(self, layer: int = 0) -> nn.Module:
        return self.model().blocks[layer].attn.core


def run_checks(ref: str, options: dict[str, Any] | None, device: torch.device) -> list[CheckResult]:
    """Resolve `ref` and its options (one-line RabenchError when they cannot be), then run every check."""
    refuse_bad_options(ref, options)
    ctx = CheckContext(ref, dict(options or {}), device)
    results = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shapes this small gain nothing from threads, and lose 10-100x on a busy machine
    try:
        for name, check in CHECKS:
            results.append(CheckResult(name, *_run_one(check, ctx)))
    finally:
        torch.set_num_threads(threads)
    return results


def refuse_bad_options(ref: str, options: dict[str, Any] | None) -> None:
    """Build the model once, as `rabench train` does, so an option value the attention refuses
    (ra-budget k=2) is train's one-line error, not a FAIL on every check. Any other exception
    is the attention's own fault: the checks report it."""
    attention.resolve_options(ref, options)
    try:
        GPT(MODEL, ref, options, seed=SEED)
    except RabenchError:
        raise
    except Exception:  # noqa: BLE001 - reported, one FAIL line per check, by the checks below
        pass


def _run_one(check: Callable[[CheckContext], tuple[str, str]], ctx: CheckContext) -> tuple[str, str]:
    try:
        return check(ctx)
    except RabenchError as exc:
        return "FAIL", str(exc)
    except Exception as exc:  # a check reports the plug-in's error in one line; it never stops the others
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return "FAIL", f"{type(exc).__name__}: {first_line}"


# ---- the checks: each returns (status, detail) ---------------------------------------------
def check_shape(ctx: CheckContext) -> tuple[str, str]:
    q, k, v, x = ctx.core_inputs()
    out = ctx.core()(q, k, v, x)
    if not isinstance(out, Tensor) or out.shape != q.shape:
        return "FAIL", f"the core returned {getattr(out, 'shape', type(out).__name__)}, expected {tuple(q.shape)} (B, H, T, D)"
    return "PASS", f"(B, H, T, D) = {tuple(q.shape)} in, same out"


def check_causal(ctx: CheckContext) -> tuple[str, str]:
    """Logits at t must not move when tokens after t change (every layer, through the model)."""
    model = ctx.model().eval()
    idx = ctx.tokens()
    t_len = idx.shape[1]
    with torch.no_grad():
        base = model(idx)[0]
        for cut in (0, t_len // 2, t_len - 2):
            changed = idx.clone()
            changed[:, cut + 1:] = ctx.tokens(seed=cut + 1)[:, cut + 1:]
            moved = (model(changed)[0][:, :cut + 1] - base[:, :cut + 1]).abs().max().item()
            if not moved <= CAUSAL_ATOL:
                return "FAIL", f"output at positions <= {cut} moved by {moved:.2e} when later tokens changed"
    return "PASS", f"outputs up to t unchanged (<= {CAUSAL_ATOL:g}) when tokens after t change"


def check_paired_starts(ctx: CheckContext) -> tuple[str, str]:
    torch.manual_seed(1234)
    sdpa = {n: p for n, p in ctx.model(attn="sdpa").named_parameters() if ".core." not in n}
    state = torch.random.get_rng_state()
    torch.manual_seed(99)
    torch.rand(13)  # another global RNG state: the build must not depend on it
    first = ctx.model()
    torch.manual_seed(5)
    second = ctx.model()
    torch.random.set_rng_state(state)
    mine = {n: p for n, p in first.named_parameters() if ".core." not in n}
    if list(mine) != list(sdpa):
        return "FAIL", "the model's shared parameters differ in names from sdpa's (the core must own its parameters)"
    bad = [n for n, p in mine.items() if not torch.equal(p, sdpa[n])]
    if bad:
        return "FAIL", f"shared parameters differ from sdpa's for the same seed: {', '.join(bad[:3])}"
    drifted = [n for (n, p), q in zip(first.state_dict().items(), second.state_dict().values()) if not torch.equal(p, q)]
    if drifted:
        return "FAIL", f"two builds with the same seed differ in {', '.join(drifted[:3])} (draw from the global RNG " \
                       "in __init__ or from reset_parameters' generator, nothing else)"
    n_core = sum(p.numel() for n, p in first.named_parameters() if ".core." in n)
    return "PASS", f"shared weights equal sdpa's; the build is a function of the seed ({n_core} core parameters)"


def _finite_step(ctx: CheckContext, autocast: bool) -> tuple[str, str]:
    model = ctx.model().train()
    idx = ctx.tokens()
    with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=autocast):
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
    loss.backward()
    if not torch.isfinite(loss):
        return "FAIL", f"loss is {loss.item()}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        return "FAIL", f"non-finite gradients in {', '.join(bad[:3])}"
    return "PASS", f"loss {loss.item():.3f}, every gradient finite"


def check_finite_fp32(ctx: CheckContext) -> tuple[str, str]:
    return _finite_step(ctx, autocast=False)


def check_finite_bf16(ctx: CheckContext) -> tuple[str, str]:
    return _finite_step(ctx, autocast=True)


def check_reference(ctx: CheckContext) -> tuple[str, str]:
    """The core in float32 against its float64 `reference`, forward and every gradient."""
    core = ctx.core(layer=ctx.model().cfg.n_layer - 1)
    if not callable(getattr(core, "reference", None)):
        return "SKIP", "the core defines no reference(q, k, v, x)"
    tol = float(getattr(core, "reference_tolerance", 1e-4))
    core64 = copy.deepcopy(core).double()
    inputs = ctx.core_inputs()
    inputs64 = tuple(t.detach().double().requires_grad_() for t in inputs)
    out, ref = core(*inputs), core64.reference(*inputs64)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(ctx.device)
    ours = torch.autograd.grad(out, [*inputs, *core.parameters()], upstream, allow_unused=True)
    theirs = torch.autograd.grad(ref, [*inputs64, *core64.parameters()], upstream.double(), allow_unused=True)
    names = ["dq", "dk", "dv", "dx"] + [f"d{n}" for n, _ in core.named_parameters()]
    errors = _errors(out, ref, names, ours, theirs)
    worst = max(errors, key=errors.get)
    if errors[worst] > tol:
        return "FAIL", f"{worst} differs from the float64 reference by {errors[worst]:.2e} (tolerance {tol:g}, " \
                       "relative to the reference's largest magnitude)"
    return "PASS", f"forward and {len(errors) - 1} gradients within {tol:g} of float64 (worst {worst} {errors[worst]:.1e})"


def _errors(out: Tensor, ref: Tensor, names: list[str], ours: tuple, theirs: tuple) -> dict[str, float]:
    """Relative error of the forward and of each named gradient (one side None: against zeros;
    both None: left out)."""
    errors = {"forward": _relative_error(out, ref)}
    for name, a, b in zip(names, ours, theirs):
        if a is None and b is None:
            continue
        errors[name] = _relative_error(a if a is not None else torch.zeros_like(b), b if b is not None else torch.zeros_like(a))
    return errors


def _relative_error(a: Tensor, b: Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


def check_compile(ctx: CheckContext) -> tuple[str, str]:
    """No graph break in a forward after one eager forward, the order training runs them in
    (TrainStep's warm-up): state a core builds on its first call (ra-amortized's pattern buffer)
    is allowed its eager start."""
    import torch._dynamo

    torch._dynamo.reset()
    core = ctx.core()
    inputs = ctx.core_inputs()
    with torch.no_grad():
        core(*inputs)
    explanation = torch._dynamo.explain(core)(*inputs)
    torch._dynamo.reset()
    if explanation.graph_break_count:
        reasons = "; ".join(str(b.reason).splitlines()[0] for b in explanation.break_reasons[:2])
        return "FAIL", f"{explanation.graph_break_count} graph break(s): {reasons}"
    return "PASS", f"{explanation.graph_count} graph, no breaks (torch._dynamo.explain)"


def check_cuda_graph(ctx: CheckContext) -> tuple[str, str]:
    if ctx.device.type != "cuda":
        return "SKIP", "needs a CUDA GPU"
    core = ctx.core()
    inputs = ctx.core_inputs(torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside the graph (allocations, autotuning, lazy init)
            core(*inputs).float().sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    for t in (*inputs, *core.parameters()):
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = core(*inputs)
        out.float().sum().backward()
    graph.replay()
    torch.cuda.synchronize()
    if not torch.isfinite(out).all():
        return "FAIL", "the replayed graph gave non-finite outputs"
    return "PASS", "forward and backward captured and replayed as one CUDA graph"


def check_query_fold(ctx: CheckContext) -> tuple[str, str]:
    """A core that folds its query map (AttentionCore: folds_query, query_affine, attend) runs as
    attend on a projection with the map folded in: that layer must equal the one that calls the
    core itself (float64, output and every gradient), or the model would train other math than
    the core's forward."""
    model = ctx.model().double()
    block = model.blocks[-1].attn
    if not block.folds_query:
        return "SKIP", "the core does not fold a query map (folds_query)"
    unfolded = copy.deepcopy(block)
    unfolded.folds_query = False
    x = torch.randn(BATCH, MODEL.block_size, MODEL.n_embd, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64).to(ctx.device)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [b(xi) for b, xi in zip((block, unfolded), xs)]
    upstream = torch.randn(outs[0].shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64).to(ctx.device)
    grads = [torch.autograd.grad(o, [xi, *b.parameters()], upstream, allow_unused=True)
             for o, xi, b in zip(outs, xs, (block, unfolded))]
    names = ["dx"] + [f"d{n}" for n, _ in block.named_parameters()]
    errors = _errors(outs[0], outs[1], names, *grads)
    worst = max(errors, key=errors.get)
    if errors[worst] > 1e-10:
        return "FAIL", f"attend(apply_query_affine(q, *query_affine())) is not the core's forward: {worst} " \
                       f"differs by {errors[worst]:.2e} (float64)"
    return "PASS", f"the query map folded into the projection gives the core's forward (worst {worst} " \
                   f"{errors[worst]:.1e}, float64)"


def check_determinism(ctx: CheckContext) -> tuple[str, str]:
    """On the CPU: two builds, the same batch -> bitwise the same loss and gradients."""
    if attention.entry(ctx.ref).needs_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        return "SKIP", "the core runs only on a CUDA GPU (or under TRITON_INTERPRET=1), not on the CPU"
    cpu = CheckContext(ctx.ref, ctx.options, torch.device("cpu"))
    idx = cpu.tokens()
    grads = []
    for _ in range(2):
        model = cpu.model().train()
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
        loss.backward()
        grads.append([loss.detach()] + [p.grad for p in model.parameters() if p.grad is not None])
    if not all(torch.equal(a, b) for a, b in zip(*grads)):
        return "FAIL", "two identical forward/backward passes on the CPU gave different numbers"
    return "PASS", "two builds, one batch: bitwise equal loss and gradients on the CPU"


def check_trains(ctx: CheckContext) -> tuple[str, str]:
    """A short run on a learnable toy sequence (each token the previous plus one) must lower the loss."""
    torch.manual_seed(0)
    model = ctx.model().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=TRAIN_LR)
    t_len = MODEL.block_size
    g = torch.Generator().manual_seed(11)
    losses = []
    for _ in range(TRAIN_STEPS):
        start = torch.randint(0, TRAIN_VOCAB, (4, 1), generator=g)
        idx = ((start + torch.arange(t_len + 1)) % TRAIN_VOCAB).to(ctx.device)
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = losses[0], min(losses[-3:])
    if not last < first * (1 - TRAIN_DROP):
        return "FAIL", f"loss {first:.3f} -> {last:.3f} in {TRAIN_STEPS} AdamW steps (needs a drop of {TRAIN_DROP:.0%})"
    return "PASS", f"loss {first:.3f} -> {last:.3f} in {TRAIN_STEPS} AdamW steps"


CHECKS: list[tuple[str, Callable[[CheckContext], tuple[str, str]]]] = [
    ("shape", check_shape),
    ("causality", check_causal),
    ("paired starts", check_paired_starts),
    ("finite fp32", check_finite_fp32),
    ("finite bf16", check_finite_bf16),
    ("float64 reference", check_reference),
    ("query fold", check_query_fold),
    ("torch.compile", check_compile),
    ("CUDA graph", check_cuda_graph),
    ("determinism (CPU)", check_determinism),
    ("short run trains", check_trains),
]
