"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built with `matplotlib.figure.Figure` rather than pyplot so that drawing a
report never changes the global backend or leaks figures in a process that also trains.
"""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from rabench.analysis.curves import AXIS_TITLES, seed_band
from rabench.analysis.runs import BASELINE, ConfigGroup, Run
from rabench.experiment import CONTROL

if TYPE_CHECKING:
    from rabench.analysis.lengths import LengthBreakEven
    from rabench.analysis.lrsweep import SweepPoint

GATE_NAMES = ("w_std", "w_rec", "w_disc")
DPI = 110


def config_colors(labels: list[str]) -> dict[str, str]:
    """sdpa black, std-gated grey, everything else from the tab10 cycle, stable by order."""
    palette = [f"C{i}" for i in range(10)]
    colors, k = {}, 0
    for label in labels:
        if label == BASELINE:
            colors[label] = "black"
        elif label == CONTROL:
            colors[label] = "grey"
        else:
            colors[label] = palette[k % len(palette)]
            k += 1
    return colors


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    return path


def plot_loss(groups: dict[str, ConfigGroup], axis: str, path: Path) -> Path | None:
    """val_loss against `axis` ('time', 'iter', 'tokens'): seed mean and min-max band.

    Left: the whole run from where losses get interesting; right: the second half of the
    axis zoomed in, where the differences the criteria judge are a few hundredths.
    """
    bands = {label: seed_band(group.runs, axis) for label, group in groups.items()}
    bands = {label: band for label, band in bands.items() if band is not None and len(band.x)}
    if not bands:
        return None
    colors = config_colors(list(groups))
    fig = Figure(figsize=(13, 5))
    ax_all, ax_zoom = fig.subplots(1, 2)
    for label, band in bands.items():
        name = f"{label} ({band.n_seeds} seed{'s' if band.n_seeds > 1 else ''})"
        for ax in (ax_all, ax_zoom):
            ax.plot(band.x, band.mean, color=colors[label], label=name, lw=1.6)
            if band.n_seeds > 1:
                ax.fill_between(band.x, band.lo, band.hi, color=colors[label], alpha=0.2, lw=0)
    x_max = max(float(b.x[-1]) for b in bands.values())
    _set_y_range(ax_all, bands, x_from=0.1 * x_max)
    ax_zoom.set_xlim(0.5 * x_max, x_max * 1.01)
    _set_y_range(ax_zoom, bands, x_from=0.5 * x_max)
    for ax, title in ((ax_all, "val_loss"), (ax_zoom, "second half, zoomed")):
        ax.set_xlabel(AXIS_TITLES[axis])
        ax.set_ylabel("val_loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_all.legend(fontsize=8)
    fig.suptitle(f"val_loss vs {AXIS_TITLES[axis].split(' (')[0]} (line: seed mean, band: min-max over seeds)")
    return _save(fig, path)


def _set_y_range(ax, bands: dict, x_from: float) -> None:
    """y limits that fit every curve from x_from on (early losses near 11 would flatten the rest)."""
    lows, highs = [], []
    for band in bands.values():
        keep = band.x >= x_from
        if not np.any(keep):
            keep = band.x >= band.x[-1]
        lows.append(float(np.nanmin(band.lo[keep])))
        highs.append(float(np.nanmax(band.hi[keep])))
    low, high = min(lows), max(highs)
    if high > low:
        pad = 0.05 * (high - low)
        ax.set_ylim(low - pad, high + pad)


def _speed_bars(groups: dict[str, ConfigGroup]) -> list[tuple[str, str, list[float]]]:
    """(config label, card, ms/iter of its runs) per config and card: ratios are only taken within a card."""
    bars = []
    cards = sorted({r.card for g in groups.values() for r in g.runs})
    for card in cards:
        for label, group in groups.items():
            values = [r.ms_per_iter for r in group.runs if r.card == card and math.isfinite(r.ms_per_iter)]
            if values:
                bars.append((label, card, values))
    return bars


def plot_ms_per_iter(groups: dict[str, ConfigGroup], path: Path) -> Path | None:
    """ms/iter per config and card (bar: seed mean, whisker: min-max), annotated with the
    ratio to sdpa on the same card; cards are never mixed in a ratio."""
    bars = _speed_bars(groups)
    if not bars:
        return None
    several_cards = len({card for _, card, _ in bars}) > 1
    base = {card: statistics.fmean(v) for label, card, v in bars if label == BASELINE}
    means = [statistics.fmean(v) for _, _, v in bars]
    lo = [max(0.0, m - min(v)) for m, (_, _, v) in zip(means, bars)]
    hi = [max(0.0, max(v) - m) for m, (_, _, v) in zip(means, bars)]
    colors = config_colors(list(groups))
    fig = Figure(figsize=(max(6, 1.1 * len(bars) + 2), 4.8))
    ax = fig.add_subplot()
    xs = np.arange(len(bars))
    ax.bar(xs, means, yerr=[lo, hi], color=[colors[label] for label, _, _ in bars], alpha=0.85, capsize=3)
    for x, mean, (_, card, _) in zip(xs, means, bars):
        text = f"{mean:.2f} ms" + (f"\n{mean / base[card]:.2f}x sdpa" if card in base else "")
        ax.annotate(text, (x, mean), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8)
    ticks = [f"{label}\n{card.split(' @ ')[0]}" if several_cards else label for label, card, _ in bars]
    ax.set_xticks(xs, ticks, rotation=30, ha="right", fontsize=8 if several_cards else 10)
    ax.set_ylabel("ms / iteration (median over the run)")
    ax.set_title("speed" + (" (ratio to sdpa on the same card above each bar)" if base else " (no sdpa run)"))
    ax.set_ylim(0, max(m + h for m, h in zip(means, hi)) * 1.25)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def gate_series(run: Run, gate: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_time_s, values[record, layer]) for one gate; layers without RA are NaN."""
    if ("gate", gate) not in run.cache:
        run.cache[("gate", gate)] = _build_gate_series(run, gate)
    return run.cache[("gate", gate)]


def _build_gate_series(run: Run, gate: str) -> tuple[np.ndarray, np.ndarray]:
    records = run.gate_records
    times = np.asarray([float(m.get("train_time_s", math.nan)) for m in records])
    rows = [[math.nan if v is None else float(v) for v in m["gates"].get(gate) or []] for m in records]
    width = max((len(r) for r in rows), default=0)
    values = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        values[i, : len(row)] = row
    return times, values


def plot_gates(run: Run, path: Path) -> Path | None:
    """w_std, w_rec, w_disc of every layer (mean over heads) over training time, one run."""
    if not run.gate_records:
        return None
    fig = Figure(figsize=(12, 3.8))
    axes = fig.subplots(1, 3)
    for ax, gate in zip(axes, GATE_NAMES):
        times, values = gate_series(run, gate)
        n_layer = values.shape[1]
        cmap = _layer_cmap()
        for layer in range(n_layer):
            if np.all(np.isnan(values[:, layer])):
                continue
            ax.plot(times, values[:, layer], color=cmap(layer / max(1, n_layer - 1)), lw=1.2, label=f"L{layer}")
        ax.set_title(gate)
        ax.set_xlabel("training time (s)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[2].legend(handles, labels, fontsize=6, ncol=2, title="layer", title_fontsize=7)
    fig.suptitle(f"RA gates per layer (mean over heads), {run.name}")
    return _save(fig, path)


def _layer_cmap():
    from matplotlib import colormaps

    return colormaps["viridis"]


def final_gates_by_layer(group: ConfigGroup, gate: str = "w_rec") -> np.ndarray | None:
    """The gate's value per layer at each run's last gate record, averaged over seeds."""
    finals = []
    for run in group.runs:
        _, values = gate_series(run, gate)
        if len(values):
            finals.append(values[-1])
    if not finals:
        return None
    width = max(len(f) for f in finals)
    stacked = np.full((len(finals), width), np.nan)
    for i, f in enumerate(finals):
        stacked[i, : len(f)] = f
    if np.all(np.isnan(stacked)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # layers without RA are all-NaN columns
        return np.nanmean(stacked, axis=0)


def plot_final_w_rec(groups: dict[str, ConfigGroup], path: Path) -> Path | None:
    """Final w_rec per layer for every config with gates: where did RA keep reciprocity?"""
    profiles = {lb: final_gates_by_layer(g) for lb, g in groups.items()}
    profiles = {lb: p for lb, p in profiles.items() if p is not None}
    if not profiles:
        return None
    colors = config_colors(list(groups))
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for label, profile in profiles.items():
        ax.plot(np.arange(len(profile)), profile, marker="o", color=colors[label], label=label)
    ax.axhline(0.152, color="grey", ls=":", lw=1, label="canonical RA init (0.152)")
    ax.set_xlabel("layer")
    ax.set_ylabel("final w_rec (mean over heads and seeds)")
    ax.set_title("reciprocal gate by layer at the end of training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def logged_series(run: Run, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iter, value) of every record that logged `key` with a finite value (also read by
    benchmarks/rerun_compare.py)."""
    pairs = [(float(m["iter"]), float(m[key])) for m in run.metrics
             if isinstance(m.get(key), (int, float)) and math.isfinite(m[key]) and isinstance(m.get("iter"), (int, float))]
    return np.asarray([p[0] for p in pairs]), np.asarray([p[1] for p in pairs])


def plot_stability(run: Run, partners: list[Run], path: Path) -> Path | None:
    """A run that became unstable beside the runs of its seed in its batch (same data order):
    train_loss (each logged window), val_loss and, where logged, the largest gradient norm."""
    runs = [run, *partners]
    series = {key: [logged_series(r, key) for r in runs] for key in ("train_loss", "val_loss", "grad_norm_max")}
    series = {key: per_run for key, per_run in series.items() if any(len(x) for x, _ in per_run)}
    if not series:
        return None
    fig = Figure(figsize=(5 * len(series), 4))
    axes = np.atleast_1d(fig.subplots(1, len(series)))
    colors = ["C3", *(f"C{i}" for i in range(10) if i != 3)]  # the unstable run red, its partners the rest
    for ax, (key, per_run) in zip(axes, series.items()):
        for r, (x, y), color in zip(runs, per_run, colors):
            if len(x):
                ax.plot(x, y, lw=0.8 if key == "train_loss" else 1.4, marker="o" if key == "val_loss" else None, ms=3,
                        color=color, alpha=0.9, label=r.name)
        x_max = max(float(x.max()) for x, _ in per_run if len(x))
        if key == "grad_norm_max":
            ax.set_yscale("log")
            ax.set_title(f"{key} (before clipping)")
        else:  # the late part, where a divergence shows
            x_from = 0.5 * x_max
            shown = np.concatenate([y[x >= x_from] for x, y in per_run])  # holds x_max's point at least
            pad = 0.05 * max(float(shown.max() - shown.min()), 1e-3)
            ax.set_xlim(x_from, x_max * 1.01)
            ax.set_ylim(float(shown.min()) - pad, float(shown.max()) + pad)
            ax.set_title(f"{key} (second half)")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{run.where} became unstable: beside the runs of its seed in its batch")
    return _save(fig, path)


def plot_length_gaps(found: list[LengthBreakEven], path: Path) -> Path | None:
    """Per candidate, each seed's paired final gap against the length ratio r = N / iterations
    of the runs that ran (lengths.LengthBreakEven): s* is where a line crosses 0."""
    found = [lb for lb in found if any(len(s.points) > 1 for s in lb.seeds)]
    if not found:
        return None
    colors = config_colors([lb.candidate for lb in found])
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.axhline(0.0, color="black", lw=0.8)
    for lb in found:
        for k, s in enumerate(lb.seeds):
            xs, ys = zip(*s.points)
            ax.plot(xs, ys, "o-", color=colors[lb.candidate], alpha=0.6, label=lb.candidate if k == 0 else None)
    ax.set_xlabel("r = N / the run's scheduled iterations (equal time at r = s)")
    ax.set_ylabel("baseline final val_loss - candidate's (nats)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lr_sweep(points: list[SweepPoint], path: Path) -> Path | None:
    """Final val_loss against lr (log axis) per config: each selection seed a point, the mean a line
    (lrsweep.SweepPoint)."""
    if not points:
        return None
    configs = list(dict.fromkeys(p.config for p in points))
    colors = config_colors(configs)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for config in configs:
        mine = [p for p in points if p.config == config]
        ax.plot([p.lr for p in mine], [p.mean for p in mine], "-", color=colors[config], label=config)
        for p in mine:
            ax.plot([p.lr] * len(p.finals), list(p.finals.values()), "o", color=colors[config], alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final val_loss at N")
    ax.legend(fontsize=8)
    return _save(fig, path)
