"""`rabench bench` on the CPU at a tiny shape: the table's structure and ratios (never its speed)."""

from __future__ import annotations

import json
from pathlib import Path

from rabench.cli import main


def test_bench_writes_both_tables_with_ratios_to_sdpa(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--attn", "sdpa,ra-open,ra-local", "--shape", "1,2,16,16", "--preset", "tiny",
                 "--compile", "no", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["attn"] for r in result["attention"]] == ["sdpa", "ra-open", "ra-local"]
    sdpa = result["attention"][0]
    assert sdpa["x_sdpa_fwd_bwd_ms"] == 1.0
    for row in result["attention"]:
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
        assert row["x_sdpa_fwd_ms"] == round(row["fwd_ms"] / sdpa["fwd_ms"], 3)
    assert [r["attn"] for r in result["steps"]] == ["sdpa", "ra-open", "ra-local"]
    assert all(r["compiled"] is False and r["tokens_per_s"] > 0 for r in result["steps"])
    assert (tmp_path / "bench.txt").read_text().startswith("machine:")
    assert "training step, preset tiny" in capsys.readouterr().out


def test_bench_rejects_a_bad_shape(capsys) -> None:
    assert main(["bench", "--shape", "8,12,1024", "--device", "cpu", "--no-steps"]) == 2
    assert "--shape" in capsys.readouterr().err
