"""FLOP counts (against hand counts), the cost floor in the report, and MFU in the bench's step rows."""

from __future__ import annotations

import pytest
import torch
from test_analysis import SIX, iteration_suite

from rabench.analysis import write_report
from rabench.attention import AttentionSpec
from rabench.attention.base import AttentionCore
from rabench.attention.pair_flops import (
    banded_reciprocal_flops,
    low_rank_reciprocal_flops,
    ra_attention_flops,
    standard_attention_flops,
)
from rabench.bench.step_rows import flops_columns, step_row
from rabench.errors import RabenchError
from rabench.flops import attention_flops_per_token, card_peak, dense_flops_per_token, floor_ratio, step_flops_per_token
from rabench.model import preset

NO_KERNEL_SENTENCE = "no implementation of this math can make it pay at this scale"


def test_attention_counts_match_a_hand_count_of_causal_pairs():
    # T = 4: the queries see 1, 2, 3, 4 keys, 10 pairs; each tile product is a length-2 dot product, 4 FLOPs
    pairs, per_product = 10, 2 * 2
    assert standard_attention_flops(4, 2, 1) == 7 * per_product * pairs / 4  # 70 per token
    assert ra_attention_flops(4, 2, 1) == 11 * per_product * pairs / 4  # 110
    assert ra_attention_flops(1024, 64, 12) / standard_attention_flops(1024, 64, 12) == pytest.approx(11 / 7)
    assert standard_attention_flops(4, 2, 3) == 3 * standard_attention_flops(4, 2, 1)  # per head


def test_variant_counts_match_hand_counts():
    std = standard_attention_flops(4, 2, 1)
    # window 2: the reciprocal term covers 1, 2, 2, 2 keys = 7 pairs, 4 extra products of 4 FLOPs each
    assert banded_reciprocal_flops(4, 2, 1, window=2) == std + 4 * 4 * 7 / 4
    assert banded_reciprocal_flops(4, 2, 1, window=1) == std + 4 * 4 * 4 / 4
    assert banded_reciprocal_flops(4, 2, 1, window=64) == ra_attention_flops(4, 2, 1)  # a window past T is RA
    # rank r = D: RA's products plus the two (D x D) projections, 2 D^2 FLOPs each forward, x3 with backward
    assert low_rank_reciprocal_flops(4, 2, 1, rank=2) == ra_attention_flops(4, 2, 1) + 3 * 2 * 2 * 2 * 2
    assert low_rank_reciprocal_flops(1024, 64, 12, rank=16) < ra_attention_flops(1024, 64, 12)


def test_built_ins_declare_and_a_silent_core_gets_standard_attention():
    cfg = preset("gpt2-124m")
    std, ra = 12 * standard_attention_flops(1024, 64, 12), 12 * ra_attention_flops(1024, 64, 12)
    for name in ("sdpa", "open", "std-gated", "ra-norec"):
        assert attention_flops_per_token(name, cfg, 1024) == std
    for name in ("ra-triton", "ra-open", "ra-folded", "ra-gated", "ra-sparse"):
        assert attention_flops_per_token(name, cfg, 1024) == ra
    # ra-layers: RA in the middle 5 of 12 layers
    assert attention_flops_per_token("ra-layers", cfg, 1024) == pytest.approx((5 * ra + 7 * std) / 12)
    assert attention_flops_per_token("ra-layers", cfg, 1024, {"layers": "0"}) == pytest.approx((ra + 11 * std) / 12)
    assert attention_flops_per_token("ra-amortized", cfg, 1024, {"every": 4}) == pytest.approx((ra + 3 * std) / 4)

    class Silent(AttentionCore):
        pass

    spec = AttentionSpec(12, 64, 768, 0, 12)
    assert Silent.attention_flops(spec, 1024) == standard_attention_flops(1024, 64, 12)


def test_a_nonsense_declaration_is_a_one_line_error(monkeypatch):
    from rabench.attention.sdpa import SDPAAttention

    monkeypatch.setattr(SDPAAttention, "attention_flops", classmethod(lambda cls, spec, t: float("nan")))
    with pytest.raises(RabenchError, match="attention_flops returned nan"):
        attention_flops_per_token("sdpa", preset("tiny"), 64)


def test_dense_part_is_six_flops_per_matmul_weight():
    cfg = preset("gpt2-124m")
    assert dense_flops_per_token(cfg) == 6 * (12 * 12 * 768**2 + 768 * 50304)  # 741.4 MFLOP per token
    assert step_flops_per_token("sdpa", cfg, 1024) == dense_flops_per_token(cfg) + 12 * standard_attention_flops(1024, 64, 12)


def test_floor_at_gpt2_124m_is_diluted_by_the_rest_of_the_model():
    cfg = preset("gpt2-124m")
    ra = floor_ratio("ra-triton", cfg, 1024)
    # attention is ~8% of sdpa's step FLOPs at T = 1024, so RA's 11/7 shows as ~1.047 on the whole step
    assert 1.04 < ra < 1.05
    assert floor_ratio("sdpa", cfg, 1024) == floor_ratio("std-gated", cfg, 1024) == 1.0
    assert 1.0 < floor_ratio("ra-local", cfg, 1024) < floor_ratio("ra-layers", cfg, 1024) < ra
    assert floor_ratio("ra-triton", cfg, 8192) > ra  # longer sequences: attention weighs more


def test_report_says_no_kernel_can_pay_when_s_star_is_below_the_floor(tmp_path):
    # RA never reaches sdpa's final loss within N: s* < 1, below RA's floor (~1.002 at tiny, T = 64)
    iteration_suite(tmp_path, SIX, lambda seed: 0.8 / 1000 - seed * 1e-6, s=1.5)
    md = write_report(tmp_path)[0].read_text()
    assert "## Cost floor" in md
    floor = floor_ratio("ra-triton", preset("tiny"), 64)
    assert "| ra-triton | sdpa | 1.500 |" in md and f"{floor:.3f}" in md
    assert NO_KERNEL_SENTENCE in md and f"would cost {floor:.3f}x sdpa's" in md


def test_report_does_not_say_it_when_s_star_is_above_the_floor(tmp_path):
    rates = {0: 1 / 500, 1: 1 / 480, 2: 1 / 520, 3: 1 / 500, 4: 1 / 490, 5: 1 / 510}  # s* ~ 2
    iteration_suite(tmp_path, SIX, rates.__getitem__, s=1.25)
    md = write_report(tmp_path)[0].read_text()
    assert "## Cost floor" in md and NO_KERNEL_SENTENCE not in md


def test_card_peaks_match_device_names():
    assert "H100 SXM" in card_peak("NVIDIA H100 80GB HBM3")[0]
    assert "H100 PCIe" in card_peak("NVIDIA H100 PCIe")[0]
    assert "H200" in card_peak("NVIDIA H200")[0]
    assert card_peak("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert card_peak("NVIDIA GeForce RTX 4090") is None and card_peak(None) is None


def test_bench_step_row_gives_flops_and_mfu_na_on_a_cpu():
    row = step_row("sdpa", "tiny", 16, 32, "none", torch.device("cpu"), steps=1)
    assert row["mfu_pct"] == "n/a (CPU)"
    assert row["model_gflop_per_token"] == round(step_flops_per_token("sdpa", preset("tiny"), 16) / 1e9, 4)


def test_mfu_uses_the_named_cards_peak(monkeypatch):
    cfg, cuda = preset("gpt2-124m"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    cols = flops_columns("ra-triton", cfg, 1024, 500_000, cuda)
    assert cols["mfu_pct"] == round(100 * step_flops_per_token("ra-triton", cfg, 1024) * 500_000 / 989e12, 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some New Card")
    assert flops_columns("sdpa", cfg, 1024, 500_000, cuda)["mfu_pct"] == "n/a (peak unknown)"


def test_report_never_imports_a_plug_in_for_its_floor(tmp_path):
    # the candidate's file does not exist: the report still runs, and says why it has no floor
    iteration_suite(tmp_path, SIX, lambda seed: 0.8 / 1000 - seed * 1e-6, s=1.5, cand="gone.py:GoneAttention")
    md = write_report(tmp_path)[0].read_text()
    assert "n/a (plug-in gone.py:GoneAttention: its runs record no step_flops_per_token, and the report does not import it" in md
    assert NO_KERNEL_SENTENCE not in md


def test_a_plug_in_floor_comes_from_the_flops_its_runs_recorded(tmp_path):
    import json

    iteration_suite(tmp_path, SIX, lambda seed: 0.8 / 1000 - seed * 1e-6, s=1.5, cand="gone.py:GoneAttention")
    for path in tmp_path.glob("*/config.json"):  # what the trainer records: the attention's own declaration
        config = json.loads(path.read_text())
        config["step_flops_per_token"] = 2.0e9 if config["attn"] == "gone.py:GoneAttention" else 1.0e9
        path.write_text(json.dumps(config))
    md = write_report(tmp_path)[0].read_text()
    assert "does not import it" not in md
    assert NO_KERNEL_SENTENCE in md  # floor 2.0 (recorded) is above every seed's s*


def test_the_trainer_records_the_step_flops_the_report_reads(tmp_path, austen_data):
    from rabench.model import preset as model_preset
    from rabench.rundir import RunFolder
    from rabench.training import TrainConfig, train

    out = tmp_path / "run"
    train(TrainConfig(attn="ra-open", data=austen_data(20_000), out=str(out), preset="tiny", max_iters=2,
                      batch_size=2, seq_len=32, eval_every=2, eval_tokens=64, device="cpu", progress_bar=False))
    config = RunFolder(out).config()
    assert config["step_flops_per_token"] == step_flops_per_token("ra-open", model_preset("tiny"), 32, {})
