"""The bench result as text (terminal) and markdown (results/bench/)."""

from __future__ import annotations

import json
from typing import Any

NAN = float("nan")

ATT_COLS = [("fwd_gpu_ms", "fwd gpu"), ("fwd_host_ms", "fwd host"), ("fwd_bwd_gpu_ms", "f+b gpu"),
            ("x_best_sdpa_fwd_bwd_gpu_ms", "x best sdpa"), ("fwd_bwd_host_ms", "f+b host"),
            ("x_best_sdpa_fwd_bwd_host_ms", "x best sdpa"), ("x_sdpa_fwd_bwd_host_ms", "x sdpa")]
STEP_COLS = [("ms_per_iter", "ms/iter"), ("x_sdpa_ms_per_iter", "x sdpa"), ("synced_ms", "synced ms"),
             ("tokens_per_s", "tokens/s"), ("peak_mem_gb", "peak GB"), ("peak_reserved_gb", "reserved GB"),
             ("warmup_s", "warm-up s"), ("model_gflop_per_token", "GFLOP/token"), ("mfu_pct", "MFU %")]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def _rows(result: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    att = []
    for r in result["attention"]:
        lead = [r["attn"], str(r.get("T", ""))]
        att.append(lead + ([r["error"]] if "error" in r else [_fmt(r.get(k, NAN)) for k, _ in ATT_COLS]))
    steps = []
    for r in result["steps"]:
        lead = [r["attn"], str(r.get("T", "")), str(r.get("compiled", ""))]
        steps.append(lead + ([r["error"]] if "error" in r else [_fmt(r.get(k, NAN)) for k, _ in STEP_COLS]))
    return att, steps


def _text_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, the rest right-aligned, each as wide as its widest cell plus two.
    A row cut short (a failed config: its lead cells, then the error) prints the error after its lead."""
    split = [(r, []) if len(r) == len(head) else (r[:-1], r[-1:]) for r in [head, *rows]]
    widths = [max(len(cells[i]) for cells, _ in split if i < len(cells)) + 2 for i in range(len(head))]

    def line(cells: list[str], tail: list[str]) -> str:
        body = "".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return body + "".join("  " + t for t in tail)
    return [line(cells, tail) for cells, tail in split]


def incomplete_lines(result: dict[str, Any]) -> list[str]:
    """One line when the tables hold fewer rows than the bench planned (it was cut off)."""
    rows = result.get("rows") or {}
    if rows.get("measured", 0) >= rows.get("planned", 0):
        return []
    return [f"INCOMPLETE: {rows['measured']} of {rows['planned']} planned rows (the bench was stopped)"]


def format_text(result: dict[str, Any]) -> str:
    att, steps = _rows(result)
    lines = [f"machine: {json.dumps(result['machine'])}", *incomplete_lines(result)]
    if att:  # --no-attention: the step table alone
        lines.append(f"attention per layer, ms; shape B,H,T,D = {result['shape']} (B scaled to keep B*T fixed)")
        lines += _text_table(["attention", "T"] + [c for _, c in ATT_COLS], att)
    if result["steps"]:
        lines.append(f"\ntraining step (TrainStep), preset {result['preset']}, {result['tokens_per_step']} tokens/step")
        lines += _text_table(["attention", "T", "compile"] + [c for _, c in STEP_COLS], steps)
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def format_markdown(result: dict[str, Any]) -> str:
    att, steps = _rows(result)
    lines = ["# rabench bench", "", f"Machine: `{json.dumps(result['machine'])}`", ""]
    lines += [f"**{line}**" for line in incomplete_lines(result)] + ([""] if incomplete_lines(result) else [])
    if result.get("command"):
        lines += [f"Command: `{result['command']}`", ""]
    lines += [f"Timing: {result['timing']}.", ""]
    if att:  # --no-attention: the step table alone
        lines += ["## Attention alone, per layer (ms)", ""]
        lines += _md_table(["attention", "T"] + [c for _, c in ATT_COLS], att)
    if result["steps"]:
        lines += ["", f"## Training step, preset {result['preset']}, {result['tokens_per_step']} tokens/step", ""]
        lines += _md_table(["attention", "T", "compile"] + [c for _, c in STEP_COLS], steps)
    return "\n".join(lines)
