"""GPT-2 (pre-LayerNorm, GELU MLP 4:1, tied embeddings) with a pluggable attention core.

Everything except the attention core is the same for every config, so differences in
loss and speed come from attention alone. That includes the starting point (paired
starts): for a given seed, every parameter outside the attention cores is drawn from
its own generator in a fixed order, and each core's parameters from a generator derived
from (seed, layer), so a core's parameters never shift the shared draws. The global
RNG is neither read nor advanced by what the model ends up holding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rabench import attention
from rabench.attention import AttentionSpec
from rabench.errors import RabenchError
from rabench.model.config import ModelConfig

SHARED_STREAM, CORE_STREAM = 0, 1  # SeedSequence tags: the shared weights' stream, the cores' streams


def init_generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one stream of `seed`: (SHARED_STREAM,) or (CORE_STREAM, layer).

    numpy's SeedSequence hashes the tuple, so the streams are unrelated to each other and
    to torch.manual_seed(seed), and different seeds give different streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RabenchError(f"seed must be a non-negative integer, got {seed!r}")
    state = np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def build_core(attn: str, spec: AttentionSpec, seed: int) -> nn.Module:
    """Core `spec.layer_idx`, built inside an RNG context seeded from (seed, layer).

    So parameters a core draws in __init__ from the global RNG (nn.Parameter(torch.randn(...)),
    nn.Linear's default init) are a function of the seed alone, whoever wrote the core; the
    global RNG state is restored afterwards. reset_parameters(generator) may redraw them.
    """
    core_seed = init_generator(seed, CORE_STREAM, spec.layer_idx).initial_seed()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(core_seed)
        return attention.build(attn, spec)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, core: nn.Module) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.core = core
        # a core's per-head query map goes into the projection (AttentionCore: folds_query, query_affine, attend)
        self.folds_query = bool(getattr(core, "folds_query", False))

    def qkv(self, x: Tensor) -> Tensor:
        """c_attn(x), with the core's query map q_h -> s_h q_h + b_h folded into its query rows when
        it has one: q_h = x (s_h W_q,h)^T + (s_h b_q,h + b_h). The map touches the (3C, C) weight and
        the bias, not the (B, T, C) activation, forward and backward."""
        if not self.folds_query:
            return self.c_attn(x)
        s, shift = self.core.query_affine()  # (H,), (H, D) or None
        c, dtype = x.shape[-1], self.c_attn.weight.dtype
        rows = torch.cat([s.repeat_interleave(c // self.n_head), s.new_ones(2 * c)]).to(dtype)
        bias = self.c_attn.bias * rows if self.c_attn.bias is not None else None
        if shift is not None:
            shift = torch.cat([shift.reshape(-1), shift.new_zeros(2 * c)]).to(dtype)
            bias = shift if bias is None else bias + shift
        return F.linear(x, self.c_attn.weight * rows[:, None], bias)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = self.core.attend(q, k, v, x) if self.folds_query else self.core(q, k, v, x)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, core: nn.Module) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg, core)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, attn: str, attn_options: dict | None = None, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.attn_name = attn
        self.seed = seed
        cores = [build_core(attn, AttentionSpec(cfg.n_head, cfg.head_dim, cfg.n_embd, i, cfg.n_layer,
                                                dict(attn_options or {})), seed) for i in range(cfg.n_layer)]
        # a core that carries position itself (ALiBi, a forget gate) asks for no absolute position embedding
        self.use_wpe = all(getattr(core, "uses_position_embedding", True) for core in cores)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, core) for core in cores)
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied embeddings
        self.reset_parameters(seed)
        self.wpe.weight.requires_grad_(self.use_wpe)  # drawn either way (paired starts); unused: frozen, so DDP ignores it

    def reset_parameters(self, seed: int) -> None:
        """Paired starts: shared weights from seed's shared stream, core i from stream (seed, i)."""
        self._init_shared_weights(init_generator(seed, SHARED_STREAM))
        for i, core in enumerate(self.cores()):
            core.reset_parameters(init_generator(seed, CORE_STREAM, i))

    @torch.no_grad()
    def _init_shared_weights(self, generator: torch.Generator) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer), biases 0, LayerNorms 1/0.

        Parameters are visited in registration order with the cores left out, so the draws
        are the same for every attention.
        """
        n_layer = self.cfg.n_layer
        for name, p in self.named_parameters():
            if ".core." in name:
                continue  # the cores draw from their own generators
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.ones_(p)  # LayerNorm gains

    def cores(self) -> list[nn.Module]:
        return [block.attn.core for block in self.blocks]

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        t = idx.shape[1]
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos) if self.use_wpe else self.wte(idx)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))
        return logits, loss

    def gate_log(self) -> dict[str, list[float | None]] | None:
        """Per-layer head-mean gate values, or None when no layer has gates."""
        means = [core.gate_means() for core in self.cores()]
        if all(m is None for m in means):
            return None
        keys = ("w_std", "w_rec", "w_disc")
        return {key: [None if m is None else round(m[key], 5) for m in means] for key in keys}

    def set_progress(self, progress: float) -> None:
        for core in self.cores():
            core.set_progress(progress)

    def set_step(self, step: int) -> None:
        """The optimizer step about to run, for every layer's step schedule."""
        for core in self.cores():
            core.set_step(step)

    def warm_up_steps(self) -> tuple[int, ...]:
        """Step indices whose forwards visit every training path of every layer (see AttentionCore)."""
        return tuple(sorted({s for core in self.cores() for s in core.warm_up_steps()}))
