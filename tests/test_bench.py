"""`rabench bench` on the CPU at a tiny shape: the table's structure and ratios (never its speed)."""

from __future__ import annotations

import json
from pathlib import Path

from rabench.cli import main


def test_bench_writes_both_tables_with_ratios_to_sdpa(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--attn", "sdpa,ra-local", "--shape", "2,2,16,16", "--seq-lens", "16,32",
                 "--preset", "tiny", "--compile", "no", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    att = result["attention"]
    assert [(r["attn"], r["T"], r["B"]) for r in att] == [("sdpa", 16, 2), ("ra-local", 16, 2), ("sdpa", 32, 1),
                                                           ("ra-local", 32, 1)]
    for row in att:
        sdpa = next(r for r in att if r["attn"] == "sdpa" and r["T"] == row["T"])
        for key in ("fwd_gpu_ms", "fwd_host_ms", "fwd_bwd_gpu_ms", "fwd_bwd_host_ms"):
            assert row[key] > 0
            assert row[f"x_sdpa_{key}"] == round(row[key] / sdpa[key], 3)
    steps = result["steps"]
    assert [(r["attn"], r["T"]) for r in steps] == [(a, t) for t in (16, 32) for a in ("sdpa", "ra-local")]
    assert all(r["compiled"] == "none" and r["tokens_per_s"] > 0 and r["ms_per_iter"] > 0 for r in steps)
    assert all(r["x_sdpa_ms_per_iter"] == 1.0 for r in steps if r["attn"] == "sdpa")
    assert (tmp_path / "bench.txt").read_text().startswith("machine:")
    md = (tmp_path / "bench.md").read_text()
    assert "| ra-local | 32 |" in md and "## Training step" in md
    printed = capsys.readouterr().out
    assert "[bench 1/8" in printed and "[bench 8/8" in printed  # progress while it runs
    assert result["rows"] == {"measured": 8, "planned": 8} and "INCOMPLETE" not in md


def test_a_bench_cut_off_keeps_the_rows_it_measured(tmp_path: Path, monkeypatch) -> None:
    import rabench.bench as bench

    def stopped(*args, **kwargs):  # the call's time limit arrives during the first step row
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "step_row", stopped)
    out = tmp_path / "bench.json"
    assert main(["bench", "--attn", "sdpa,ra-local", "--shape", "2,2,16,16", "--preset", "tiny", "--compile", "no",
                 "--device", "cpu", "--out", str(out)]) == 130  # the CLI's exit for an interruption
    result = json.loads(out.read_text())
    assert [r["attn"] for r in result["attention"]] == ["sdpa", "ra-local"] and result["steps"] == []
    assert result["rows"] == {"measured": 2, "planned": 4}
    assert result["attention"][1]["x_sdpa_fwd_host_ms"] > 0  # ratios are kept up to date as rows arrive
    assert "INCOMPLETE: 2 of 4 planned rows" in (tmp_path / "bench.txt").read_text()
    assert "**INCOMPLETE: 2 of 4 planned rows" in (tmp_path / "bench.md").read_text()


def test_bench_rejects_bad_shapes_and_lengths(capsys) -> None:
    assert main(["bench", "--shape", "8,12,1024", "--device", "cpu", "--no-steps"]) == 2
    assert "--shape" in capsys.readouterr().err
    assert main(["bench", "--seq-lens", "1024,x", "--device", "cpu", "--no-steps"]) == 2
    assert "--seq-lens" in capsys.readouterr().err


def test_text_table_keeps_columns_apart_and_prints_a_failed_row_after_its_lead() -> None:
    from rabench.bench.table import format_text

    result = {"machine": {}, "shape": [8, 12, 1024, 64], "attention": [], "preset": "gpt2-124m", "tokens_per_step": 8192,
              "steps": [{"attn": "sdpa", "T": 1024, "compiled": "reduce-overhead", "ms_per_iter": 20.7},
                        {"attn": "ra-amortized", "T": 1024, "compiled": "reduce-overhead", "error": "failed: boom"}]}
    lines = format_text(result).splitlines()
    sdpa = next(ln for ln in lines if ln.startswith("sdpa"))
    failed = next(ln for ln in lines if ln.startswith("ra-amortized"))
    assert "1024  reduce-overhead" in sdpa.split("sdpa", 1)[1]  # a long compile mode no longer runs into T
    assert failed.endswith("reduce-overhead  failed: boom")
    assert sdpa.index("reduce-overhead") == failed.index("reduce-overhead")  # the lead columns line up


def test_a_steps_only_bench_prints_no_empty_attention_table() -> None:
    from rabench.bench.table import format_markdown, format_text

    result = {"machine": {}, "shape": [8, 12, 1024, 64], "attention": [], "preset": "gpt2-124m", "tokens_per_step": 8192,
              "timing": "t", "steps": [{"attn": "sdpa", "T": 1024, "compiled": "reduce-overhead", "ms_per_iter": 20.7}]}
    md, text = format_markdown(result), format_text(result)
    assert "Attention alone" not in md and "attention per layer" not in text  # --no-attention: nothing to show
    assert "## Training step" in md and "training step" in text
