"""The contract every attention core implements, built-in or plug-in.

What a core receives: q, k, v of shape (B, H, T, D) (the layer's c_attn output split into
heads, in the training dtype) and x (B, T, C), the block's normalised input, for variants
whose gates read the hidden states. `spec` (an AttentionSpec) says where it sits: n_head,
head_dim, n_embd, layer_idx, n_layer and its resolved options.

What it returns: a (B, H, T, D) tensor, causal: the output at position t may depend on
tokens 0..t only (`rabench check` tests this). The model projects it with c_proj.

Its own parameters, and paired starts: the model builds core i inside an RNG context seeded
from (seed, i), so parameters drawn in `__init__` the usual way (`nn.Parameter(torch.randn(...))`,
nn.Linear's default init) are a function of the run's seed alone, and the global RNG is left
as it was. A core may also override `reset_parameters(generator)` to redraw them from the
(seed, layer) generator explicitly (the built-ins do). Everything outside the cores
(embeddings, c_attn, c_proj, MLPs, LayerNorms) is drawn from the seed's shared stream and
equals sdpa's for the same seed, whatever the core owns.

What a plug-in declares (class attributes; built-ins declare the same through `@register`):
  summary          one line for `rabench attentions` (default: the docstring's first line)
  default_options  {name: default}: the options `--attn-opt k=v` may set; each value is
                   coerced to its default's type (bool, int, float, tuple of ints, str)
  role             "candidate" (default: judged against sdpa on every criterion), "ra" or
                   "ra-variant" (on RA's side of the plan's questions) or "control"
  needs_gpu        True when it only runs on a CUDA GPU
  uses_position_embedding
                   False for a variant that carries position itself (ALiBi, a forget gate):
                   the model then adds no absolute position embedding (the table still
                   exists and is drawn, so paired starts hold; it gets no gradient)
Optional:
  reference(q, k, v, x)  the core's math written plainly; `rabench check` runs it in float64
                   on the same parameters and compares the forward and every gradient
  reference_tolerance    the largest error accepted against it, relative to the reference's
                   largest magnitude (default 1e-4: the core runs in float32)
  attention_flops(spec, seq_len)  classmethod: this core's FLOPs per token in the layer `spec`
                   describes, forward + backward, as a flash-style kernel would do its math
                   (causal pairs only; the backward recomputes the scores). The report's cost
                   floor and the bench's MFU read it. Default: standard causal attention's,
                   7 * n_head * head_dim * (seq_len + 1) (see `rabench.flops`); a core whose
                   math costs more or less declares its own, e.g. with
                   `rabench.flops.causal_pair_flops(products_per_pair, seq_len, head_dim, n_head)`;
                   a core that only does more or fewer tile products per causal pair sets the
                   class attribute `pair_products` instead (RA's routes: 11).
  folds_query = True, query_affine() and attend(q, k, v, x)
                   for a core whose math starts with an affine map of q per head, q' = s_h q +
                   b_h (std-gated's learned temperature; ra-norec's, whose column bias
                   w_disc d_j = k_j . (w_disc u) rides on q as b_h): query_affine() returns
                   (s (H,), b (H, D) or None), attend does the rest, and forward must equal
                   attend(apply_query_affine(q, s, b), k, v, x). The model folds the map into
                   the query rows of the layer's projection (weights times s, bias times s
                   plus b) and calls attend: the same math without an activation-sized op.
A norm on q and k (QK-norm) needs no hook: the core receives q and k and may normalise them
itself, with its own parameters. Hooks that change the rest of the block (LayerScale on the
residual branch, a different MLP) are not supported: the comparison holds everything outside
the core fixed.

Helpers the built-ins use, part of the contract: `causal_mask`, `masked_softmax_apply`,
`upcast` (half precision to float32, float64 untouched, for float64 checks),
`init_linear` (nn.Linear's init from a given generator), all in `rabench.attention`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rabench.attention.pair_flops import STANDARD_PRODUCTS, causal_pair_flops
from rabench.attention.spec import AttentionSpec


class AttentionCore(nn.Module):
    summary: ClassVar[str] = ""
    default_options: ClassVar[dict[str, Any]] = {}
    role: ClassVar[str] = "candidate"
    needs_gpu: ClassVar[bool] = False
    uses_position_embedding: ClassVar[bool] = True
    reference_tolerance: ClassVar[float] = 1e-4
    pair_products: ClassVar[int] = STANDARD_PRODUCTS  # tile products per causal pair (the default count)
    folds_query: bool = False  # True: the model folds query_affine() into the projection, calls attend

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        self.spec = spec
        self.scale = spec.head_dim**-0.5

    @classmethod
    def attention_flops(cls, spec: AttentionSpec, seq_len: int) -> float:
        """FLOPs per token of this core in layer `spec`, forward + backward (the cost floor's input).

        Default: `pair_products` tile products per causal pair (rabench.flops): standard causal
        attention's 7 unless the class sets it (RA's routes: 11).
        """
        return causal_pair_flops(cls.pair_products, seq_len, spec.head_dim, spec.n_head)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """(Re)draw this core's own parameters from `generator` (None: the global generator).

        The default initialises RA's gates (`self.gates`, when there are any) and leaves any
        other parameter as `__init__` drew it (already a function of (seed, layer)); a variant
        that wants explicit draws overrides this, calls super(), then draws its own, always
        from `generator` and in a fixed order.
        """
        gates = getattr(self, "gates", None)
        if gates is not None:
            gates.reset_parameters(generator)

    def gate_means(self) -> dict[str, float] | None:
        """Head-averaged RA gate values (w_std, w_rec, w_disc) for the log; None if it has none.

        RA-family modules keep their RAGates in `self.gates`; that is all this needs.
        """
        gates = getattr(self, "gates", None)
        return gates.mean_weights() if gates is not None else None

    def set_progress(self, progress: float) -> None:
        """Fraction of the run's budget spent, in [0, 1]; schedules (annealing) read it."""

    def set_step(self, step: int) -> None:
        """Index of the optimizer step about to run (0-based), set before its forwards; step
        schedules (ra-amortized's refreshes) read it, as plain Python state the compiler guards on."""

    def warm_up_steps(self) -> tuple[int, ...]:
        """Step indices whose forwards together take every path this module takes in training:
        warm-up runs each, so that compiling and CUDA-graph recording all happen before timing."""
        return (0,)

    def gate_parameters(self) -> list[nn.Parameter]:
        """The parameters `--gate-lr-mult` scales the learning rate of: RA's gate logits and
        discoverability vector (`self.gates`, when there are any). A core whose gate lives
        elsewhere (std-gated) overrides this."""
        gates = getattr(self, "gates", None)
        return list(gates.parameters()) if gates is not None else []
