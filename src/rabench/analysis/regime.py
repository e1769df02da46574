"""The regime a report's headline holds in: data, tokens, epochs, model, batch, lr, N and seeds.

A verdict holds for the regime its runs trained in, so every headline names it. The numbers
come from the runs' config.json (`data_regime`, written by the trainer through
`rabench.data.regime`, the one owner of epochs and the repeated-token share); an older folder
that lacks a field gets "not recorded" rather than a guess.
"""

from __future__ import annotations

from rabench.analysis.runs import BASE_ROLE, BASELINE, LR_SWEEP, PLATEAU, Run
from rabench.stats import finite
from rabench.data.regime import epochs, repeated_token_share

NOT_RECORDED = "not recorded"


def _distinct(values: list) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def data_text(runs: list[Run]) -> str:
    """The sources the runs trained on (config data_regime), else the data path they name."""
    regimes = [r.config.get("data_regime") for r in runs]
    sources = _distinct([" + ".join(map(str, reg.get("sources") or [])) for reg in regimes if isinstance(reg, dict)])
    if sources and all(sources):
        return "; ".join(sources)
    paths = _distinct([str(r.config["data"]) for r in runs if r.config.get("data")])
    return f"{', '.join(paths)} (sources {NOT_RECORDED})" if paths else NOT_RECORDED


def train_tokens(runs: list[Run]) -> int | None:
    """The training split's size, when every run that records it agrees."""
    values = _distinct([int(reg["train_tokens"]) for r in runs
                        if isinstance(reg := r.config.get("data_regime"), dict) and finite(reg.get("train_tokens")) and reg["train_tokens"] > 0])
    return values[0] if len(values) == 1 else None


def tokens_text(runs: list[Run]) -> str:
    """Train tokens, and the epochs and repeated-token share the baseline's runs reached at their end."""
    split = train_tokens(runs)
    base = [r for r in runs if r.attn == BASELINE and r.role == BASE_ROLE] or runs
    read = max((r.tokens for r in base), default=0)
    at = "per run at N" if base is not runs else "by the longest run"  # no baseline run of N iterations: no N
    read_text = f"{read / 1e6:.1f}M tokens read {at}" if read else f"tokens read {NOT_RECORDED}"
    if split is None:
        return f"train split {NOT_RECORDED} (epochs and repeated-token share {NOT_RECORDED}); {read_text}"
    x = epochs(read, split)
    return (f"train split {split:,} tokens; {read_text}: {x:.2f} epochs, {repeated_token_share(x):.0%} of the tokens read "
            "had been read before (random windows with replacement)")


def settings_text(runs: list[Run]) -> str:
    """Model preset, batch shape, the lr of each config, N and the seeds."""
    c = [r.config for r in runs]
    presets = _distinct([x.get("preset") or NOT_RECORDED for x in c])
    batch = _distinct([f"{x.get('batch_size', '?')} x {x.get('seq_len', '?')} tokens"
                       + (f" x {x['grad_accum']} accumulation" if (x.get("grad_accum") or 1) > 1 else "") for x in c])
    lrs: dict[str, list] = {}
    for r in runs:
        lrs.setdefault(f"{r.config.get('lr', NOT_RECORDED):g}" if finite(r.config.get("lr")) else NOT_RECORDED, []).append(r.attn)
    lr_text = (f"lr {next(iter(lrs))} (every config)" if len(lrs) == 1 else
               "lr " + "; ".join(f"{lr} ({', '.join(_distinct(attns))})" for lr, attns in lrs.items()))
    base = [r for r in runs if r.role == BASE_ROLE]
    n = _distinct([r.scheduled_iters for r in base if r.scheduled_iters])
    seeds = sorted({r.seed for r in runs})
    n_text = f"N = {', '.join(f'{v:,}' for v in n) or NOT_RECORDED} iterations"
    caps = _distinct([r.config.get("max_iters") for r in runs if r.role == PLATEAU and r.config.get("max_iters")])
    if not base and caps:  # runs to a plateau have no N of their own: their budget is a cap
        n_text = f"runs to a val_loss plateau, capped at N = {', '.join(f'{v:,}' for v in caps)} iterations"
    return (f"model {', '.join(presets)}; batch {', '.join(batch)}; {lr_text}; "
            f"{n_text}; {len(seeds)} seeds ({seed_range(seeds)})")


def seed_range(seeds: list[int]) -> str:
    """0-9, 12 (runs of consecutive seeds joined)."""
    parts, start = [], None
    for i, s in enumerate(seeds):
        start = s if start is None else start
        if i + 1 == len(seeds) or seeds[i + 1] != s + 1:
            parts.append(f"{start}-{s}" if s != start else f"{s}")
            start = None
    return ", ".join(parts)


def regime_text(runs: list[Run]) -> str:
    """One line naming the regime, for the top of every headline: the settings of the runs the
    verdicts use, then an lr sweep's selection runs apart (they train at other rates and seeds)."""
    if not runs:
        return f"regime: {NOT_RECORDED}"
    verdict = verdict_runs(runs)
    settings = settings_text(verdict) if verdict else "no verdict run yet"
    return f"regime: data {data_text(runs)}; {tokens_text(runs)}; {settings}{selection_text(runs)}"


def verdict_runs(runs: list[Run]) -> list[Run]:
    """The runs a verdict may use: all but an lr sweep's selection runs (never paired)."""
    return [r for r in runs if r.role != LR_SWEEP]


def selection_runs(runs: list[Run]) -> list[Run]:
    """An lr sweep's selection runs: the rest of verdict_runs' split."""
    return [r for r in runs if r.role == LR_SWEEP]


def selection_text(runs: list[Run]) -> str:
    """'; lr-sweep selection runs (...): rates ..., seeds ...', or '' without a sweep."""
    selection = selection_runs(runs)
    if not selection:
        return ""
    rates = sorted({float(r.config["lr"]) for r in selection if finite(r.config.get("lr"))})
    seeds = sorted({r.seed for r in selection})
    return (f"; lr-sweep selection runs (never paired): rates {', '.join(f'{lr:g}' for lr in rates) or NOT_RECORDED} "
            f"on {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({seed_range(seeds)})")
