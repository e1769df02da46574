"""The val set (deterministic, spread over the whole split) and evaluate (loss, se, per source, DDP slices)."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from rabench.data import TokenSplit, write_shard
from rabench.errors import RabenchError
from rabench.presets import PRESET_RECORDS
from rabench.training import evaluation
from rabench.training.distributed import DistInfo
from rabench.training.evaluation import build_val_set, evaluate, val_window_starts

VOCAB = 40
CPU = torch.device("cpu")


def make_dataset(root: Path, docs: list[tuple[int, list[int]]], names: list[str] | None) -> Path:
    """A hand-made prepared folder with a val split of `docs` (source id, tokens); names=None: an old folder."""
    root.mkdir(parents=True, exist_ok=True)
    tokens = np.concatenate([np.array(t, dtype=np.uint16) for _, t in docs])
    sha = write_shard(root / "val_000000.bin", tokens)
    split = {"documents": len(docs), "tokens": int(len(tokens)),
             "shards": [{"file": "val_000000.bin", "tokens": int(len(tokens)), "sha256": sha}]}
    meta = {"splits": {"val": split}}
    if names is not None:
        starts = np.cumsum([0] + [len(t) for _, t in docs[:-1]])
        np.save(root / "val_docs.npy", np.stack([starts, [s for s, _ in docs]], axis=1).astype(np.int64))
        split["documents_index"] = {"file": "val_docs.npy", "sha256": "-"}
        meta["source_names"] = names
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def two_source_docs(seed: int = 0) -> list[tuple[int, list[int]]]:
    """Alternating documents: source 0 is mostly token 1 (easy for the fake model), source 1 is random."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(30):
        n = int(rng.integers(5, 60))
        if i % 3 == 2:
            docs.append((1, rng.integers(2, VOCAB, n).tolist()))
        else:
            docs.append((0, [1] * n))
    return docs


class FakeLM(torch.nn.Module):
    """logits = table[x]: fixed per input token, so the loss of each token is known in advance."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB, generator=gen))
        with torch.no_grad():
            self.table[:, 1] += 4.0  # predicts token 1 well

    def forward(self, idx, targets=None):
        return self.table[idx], None


def reference(split_tokens: np.ndarray, docs, starts, seq_len: int, names: list[str]):
    """Loss, se and per-source means written out token by token."""
    table = FakeLM().table.detach().double()
    logp = torch.log_softmax(table, dim=-1).numpy()
    doc_of = np.concatenate([[s] * len(t) for s, t in docs])
    per_seq, sums, counts = [], [0.0] * len(names), [0] * len(names)
    for s in starts:
        losses = []
        for t in range(seq_len):
            x, y = split_tokens[s + t], split_tokens[s + t + 1]
            loss = -logp[x, y]
            losses.append(loss)
            src = doc_of[s + t + 1]
            sums[src] += loss
            counts[src] += 1
        per_seq.append(sum(losses) / seq_len)
    se = statistics.stdev(per_seq) / math.sqrt(len(per_seq))
    return statistics.fmean(per_seq), se, {n: sums[i] / counts[i] for i, n in enumerate(names) if counts[i]}


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, list]:
    docs = two_source_docs()
    return make_dataset(tmp_path / "data", docs, ["english", "code"]), docs


def test_default_sizes() -> None:
    assert PRESET_RECORDS["gpt2-124m"].eval_tokens == PRESET_RECORDS["gpt2-350m"].eval_tokens == 2_097_152
    assert PRESET_RECORDS["small"].eval_tokens == PRESET_RECORDS["tiny"].eval_tokens == 32_768


def test_windows_spread_over_the_whole_split_without_overlap() -> None:
    starts = val_window_starts(10_001, 16, 40)
    assert np.array_equal(starts, val_window_starts(10_001, 16, 40))  # deterministic
    assert np.all(np.diff(starts) >= 16)  # non-overlapping inputs
    slots = 10_000 // 16
    assert starts[0] < 16 * slots / 40 and starts[-1] + 17 > 10_001 - 16 * slots / 40  # first and last strata
    assert starts[-1] + 17 <= 10_001
    assert np.array_equal(val_window_starts(10_001, 16, slots), np.arange(slots) * 16)  # everything: a tiling


def test_val_set_is_deterministic_and_reads_the_split(dataset) -> None:
    root, docs = dataset
    split = TokenSplit(root, "val")
    a = build_val_set(split, batch_size=4, seq_len=8, n_tokens=100)
    b = build_val_set(TokenSplit(root, "val"), batch_size=4, seq_len=8, n_tokens=100)
    assert a.n_sequences == 12 and a.n_tokens == 96  # 100 // 8 = 12 sequences: 3 whole batches
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a.batches, b.batches))
    tokens = split.window(0, len(split)).astype(np.int64)
    xs = torch.cat([x for x, _ in a.batches])
    ys = torch.cat([y for _, y in a.batches])
    for row, s in enumerate(a.starts):
        assert xs[row].tolist() == tokens[s : s + 8].tolist() and ys[row].tolist() == tokens[s + 1 : s + 9].tolist()
    assert a.starts[-1] > len(split) * 0.8  # reaches the end of the split, not just its start
    src = torch.cat(a.token_sources)
    doc_of = np.concatenate([[s] * len(t) for s, t in docs])
    assert src.tolist() == [[int(doc_of[s + 1 + t]) for t in range(8)] for s in a.starts]


def test_val_set_size_capped_at_the_split_and_whole_batches(dataset) -> None:
    root, _ = dataset
    split = TokenSplit(root, "val")
    slots = (len(split) - 1) // 8
    whole = build_val_set(split, batch_size=4, seq_len=8, n_tokens=None)
    assert whole.n_sequences == slots - slots % 4
    assert build_val_set(split, batch_size=4, seq_len=8, n_tokens=10**9).n_sequences == whole.n_sequences
    assert build_val_set(split, batch_size=4, seq_len=8, n_tokens=1).n_sequences == 4  # at least one batch
    with pytest.raises(RabenchError, match="eval_tokens"):
        build_val_set(split, batch_size=4, seq_len=8, n_tokens=0)


def test_evaluate_loss_se_and_per_source_match_a_written_out_reference(dataset) -> None:
    root, docs = dataset
    split = TokenSplit(root, "val")
    val = build_val_set(split, batch_size=4, seq_len=8, n_tokens=None)
    got = evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo())
    loss, se, by_source = reference(split.window(0, len(split)), docs, val.starts, 8, ["english", "code"])
    assert got.loss == pytest.approx(loss, rel=1e-6)
    assert got.se == pytest.approx(se, rel=1e-5)
    assert got.by_source.keys() == {"english", "code"}
    for name in by_source:
        assert got.by_source[name] == pytest.approx(by_source[name], rel=1e-6)
    assert got.by_source["english"] < got.by_source["code"] - 1.0  # the fake model knows source 0's token


def test_old_folder_without_sources_evaluates_without_per_source(tmp_path: Path) -> None:
    docs = two_source_docs()
    root = make_dataset(tmp_path / "old", docs, None)
    split = TokenSplit(root, "val")
    assert split.documents() is None
    val = build_val_set(split, batch_size=4, seq_len=8, n_tokens=None)
    got = evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo())
    loss, se, _ = reference(split.window(0, len(split)), docs, val.starts, 8, ["a", "b"])
    assert got.by_source == {} and got.loss == pytest.approx(loss, rel=1e-6) and got.se == pytest.approx(se, rel=1e-5)


def test_ranks_evaluate_disjoint_slices_that_combine_to_one_process(dataset, monkeypatch) -> None:
    """Under DDP (simulated): each rank evaluates its batches; the union of their values is one process's."""
    root, _ = dataset
    val = build_val_set(TokenSplit(root, "val"), batch_size=4, seq_len=8, n_tokens=None)
    seen: dict[int, dict[int, float]] = {}

    def fake_gather(values, n, info, device):
        seen[info.rank] = dict(values)
        full = [0.0] * n
        for i, v in values.items():
            full[i] = v
        return full

    monkeypatch.setattr(evaluation.dd, "gather_indexed", fake_gather)
    single = evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo())
    whole = seen.pop(0)
    for rank in range(3):
        evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo(rank=rank, world_size=3))
    parts = [set(seen[r]) for r in range(3)]
    assert all(p for p in parts) and sum(len(p) for p in parts) == len(whole)  # disjoint, all covered
    merged = {k: v for r in range(3) for k, v in seen[r].items()}
    assert merged == whole  # bit for bit
    table = np.array([merged[i] for i in range(len(merged))]).reshape(val.n_sequences, -1)
    assert evaluation.summarise(table, val.source_names) == single


def test_evaluate_restores_training_mode(dataset) -> None:
    root, _ = dataset
    val = build_val_set(TokenSplit(root, "val"), batch_size=4, seq_len=8, n_tokens=32)
    model = FakeLM().train()
    evaluate(model, val, CPU, contextlib.nullcontext(), DistInfo())
    assert model.training
    model.eval()
    evaluate(model, val, CPU, contextlib.nullcontext(), DistInfo())
    assert not model.training


def test_real_model_on_prepared_mixed_sources(tmp_path: Path) -> None:
    """End to end on prepare's output: two JSONL sources, a tiny GPT, a finite loss per source."""
    from rabench.data import prepare
    from rabench.model import build_model

    english = [{"text": f"The {w} walked home along the river, talking of the weather. " * 3}
               for w in ("lady", "man", "child", "dog", "horse", "cat", "girl", "boy", "friend", "judge")]
    code = [{"text": f"static int f{i}(int x)\n{{\n\treturn x * {i} + {i};\n}}\n" * 3} for i in range(12)]
    for name, records in (("english.jsonl", english), ("code.jsonl", code)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    data = tmp_path / "data"
    prepare([str(tmp_path / "english.jsonl"), str(tmp_path / "code.jsonl")], data, val_fraction=0.5,
            workers=1, progress=False)
    val = build_val_set(TokenSplit(data, "val"), batch_size=2, seq_len=16, n_tokens=None)
    result = evaluate(build_model("tiny", "sdpa", None, 0), val, CPU, contextlib.nullcontext(), DistInfo())
    assert set(result.by_source) == {"english", "code"}
    assert all(math.isfinite(v) for v in result.by_source.values())
    assert result.se is not None and result.se > 0


def _ddp_worker(rank: int, root: str, out: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    try:
        val = build_val_set(TokenSplit(root, "val"), batch_size=4, seq_len=8, n_tokens=None)
        r = evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo(rank=rank, world_size=2))
        Path(out, f"{rank}.json").write_text(json.dumps([r.loss, r.se, r.by_source]))
    finally:
        tdist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~10 s on a busy 2-core machine
def test_two_gloo_ranks_give_one_process_result_exactly(dataset, tmp_path: Path) -> None:
    import torch.distributed as tdist
    import torch.multiprocessing as mp

    if not (tdist.is_available() and tdist.is_gloo_available()):
        pytest.skip("gloo not available")
    root, _ = dataset
    val = build_val_set(TokenSplit(root, "val"), batch_size=4, seq_len=8, n_tokens=None)
    single = evaluate(FakeLM(), val, CPU, contextlib.nullcontext(), DistInfo())
    mp.spawn(_ddp_worker, args=(str(root), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        loss, se, by_source = json.loads((tmp_path / f"{rank}.json").read_text())
        assert (loss, se, by_source) == (single.loss, single.se, single.by_source)  # bit for bit, every rank
