"""`rabench demo` and what it stands on: the toy vocabulary, the toy preset's vocabulary check, the
README's answer it prints, and (slow) a short demo end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rabench.commands import demo
from rabench.data import TokenSplit, load_meta, verify_checksums
from rabench.data.toy import toy_vocabulary
from rabench.errors import RabenchError
from rabench.rundir import RunFolder
from rabench.training import TrainConfig, train


@pytest.fixture(scope="module")
def gpt2_data(tmp_path_factory) -> str:
    from rabench.data import prepare

    out = tmp_path_factory.mktemp("demo") / "austen"
    prepare(["austen"], out, max_tokens=60_000, workers=1, progress=False)
    return str(out)


def test_toy_vocabulary_renumbers_by_train_frequency_and_keeps_the_documents(gpt2_data: str, tmp_path: Path) -> None:
    toy = toy_vocabulary(gpt2_data, tmp_path / "toy", 64)
    meta, src_meta = load_meta(toy), load_meta(gpt2_data)
    assert meta["vocab_size"] == 64 and meta["toy_vocabulary"]["size"] == 64
    assert verify_checksums(toy) == verify_checksums(gpt2_data)  # every shard and index rewritten with its hash
    src_train = np.concatenate([np.asarray(s) for s in TokenSplit(gpt2_data, "train").shards])
    counts = np.bincount(src_train)
    top = int(np.argmax(counts))
    for split in ("train", "val"):
        old, new = TokenSplit(gpt2_data, split), TokenSplit(toy, split)
        assert len(new) == len(old) and new.documents().starts.tolist() == old.documents().starts.tolist()
        old_ids = np.concatenate([np.asarray(s) for s in old.shards])
        new_ids = np.concatenate([np.asarray(s) for s in new.shards])
        assert new_ids.max() < 64
        assert np.all(new_ids[old_ids == top] == 0)  # the most frequent train token is id 0
        # a token id maps to one toy id wherever it occurs (a renumbering, not a re-tokenization)
        assert all(len(set(new_ids[old_ids == t].tolist())) == 1 for t in np.unique(old_ids)[:50])
        if split == "train":
            shared = float(np.mean(new_ids == 63))
            assert 0 < shared < 1 and meta["toy_vocabulary"]["train_share_of_shared_id"] == round(shared, 4)
    assert meta["eot_id"] == int(np.unique(new_ids[old_ids == src_meta["eot_id"]])[0])
    assert toy_vocabulary(gpt2_data, tmp_path / "toy", 64) == toy  # made once, reused


def test_toy_preset_refuses_gpt2_ids_in_one_line(gpt2_data: str, tmp_path: Path) -> None:
    cfg = TrainConfig(attn="sdpa", data=gpt2_data, out=str(tmp_path / "run"), preset="toy", device="cpu",
                      max_iters=1, progress_bar=False)
    with pytest.raises(RabenchError, match="preset toy has a vocabulary of 512 ids but 50257-id data"):
        train(cfg)


def test_the_printed_gpu_answer_is_the_readmes(tmp_path: Path) -> None:
    readme = demo.README.read_text(encoding="utf-8")
    answer, *leads = demo.answer_lines(readme)
    assert answer.startswith("The answer:") and len(leads) == 3
    plain = readme.replace("**", "")
    assert all(line in plain for line in [answer, *leads])
    text = demo.gpu_answer_text()
    assert all(line in text for line in [answer, *leads])
    suite = next(c for c in demo.REAL_COMMANDS if c.startswith("rabench suite"))
    assert "--data" in suite and "--preset gpt2-124m" in suite and "ra-triton" in suite
    (tmp_path / "README.md").write_text("# no answer section\n")
    assert "README.md" in demo.gpu_answer_text(tmp_path / "README.md")  # says where to look, invents nothing


@pytest.mark.slow
def test_demo_trains_equal_iterations_and_reports_paired_gaps(gpt2_data: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    shutil.copytree(gpt2_data, out / "data-austen")  # the demo prepares Austen once; reuse the small copy
    runs = demo.run_demo(out, iters=30, seeds=[0, 1], progress_bar=False)
    text = capsys.readouterr().out
    assert "toy vocabulary" in text and "Equal iterations, not equal time" in text
    assert "ms/iter" not in text and "x sdpa" not in text  # no CPU speed figures
    for attn in demo.DEMO_ATTNS:
        attn_runs = [p for p in runs.iterdir() if p.is_dir() and p.name.startswith(attn + "-s")]
        assert len(attn_runs) == 2
        for run in attn_runs:
            folder = RunFolder(run)
            assert folder.summary()["iters"] == 30 and folder.config()["preset"] == "toy"
            evals = [r["iter"] for r in folder.metrics() if "val_loss" in r]
            assert evals == [0, 25, 30]
    table = text[text.index("val_loss at equal iterations"):]
    assert all(f"\n{attn}" in table for attn in demo.DEMO_ATTNS)
    assert "ra-open" in text and "over 2 seeds" in text
    assert text.rstrip().endswith(demo.REAL_COMMANDS[-1])


def test_gap_words_follow_the_suites_exact_test_rule():
    from rabench.stats import paired_stats

    assert demo.gap_words(paired_stats([0.01, -0.02, 0.005])) == "not separated from sdpa"
    three = demo.gap_words(paired_stats([-0.05, -0.06, -0.055]))  # the interval excludes 0, but p = 0.25
    assert three.startswith("leans ahead of sdpa") and "too few for a verdict" in three
    assert demo.gap_words(paired_stats([0.05, 0.06, 0.055, 0.05, 0.06, 0.052])) == "behind sdpa beyond the noise"
