"""Tokenizer and `prepare`: shard contents, the document split, determinism, refusals."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from rabench.data import EOT, gpt2_encoding, iter_source, open_shard, prepare, read_shard_header
from rabench.data.prepare import document_goes_to_val
from rabench.errors import RabenchError

MAX_TOKENS = 50_000
VAL_FRACTION = 0.2  # large enough that the hash rule, not the fallback, fills val


def split_tokens(data_dir: Path, meta: dict, split: str) -> np.ndarray:
    shards = [open_shard(data_dir / s["file"]) for s in meta["splits"][split]["shards"]]
    return np.concatenate(shards) if shards else np.empty(0, np.uint16)


def documents_of(tokens: np.ndarray) -> list[tuple[int, ...]]:
    """Cut a split at its EOTs; each piece is one document's tokens (EOT excluded)."""
    starts = np.flatnonzero(tokens == EOT)
    ends = list(starts[1:]) + [len(tokens)]
    return [tuple(tokens[s + 1 : e].tolist()) for s, e in zip(starts, ends)]


@pytest.fixture(scope="module")
def austen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("austen")
    meta = prepare(["austen"], out, max_tokens=MAX_TOKENS, val_fraction=VAL_FRACTION, workers=1, progress=False)
    return out, meta


def test_tokenizer_matches_gpt2() -> None:
    enc = gpt2_encoding()
    assert enc.encode("hello world") == [31373, 995]
    assert enc.n_vocab == 50257 and enc.eot_token == EOT == 50256
    assert enc.encode("<|endoftext|>", allowed_special="all") == [EOT]
    assert enc.decode(enc.encode(" Emma Woodhouse, handsome")) == " Emma Woodhouse, handsome"
    assert gpt2_encoding() is enc  # cached


def test_meta_counts_match_shards(austen: tuple[Path, dict]) -> None:
    out, meta = austen
    assert meta["tokens"] == MAX_TOKENS and meta["last_document_truncated"]
    assert meta["eot_id"] == EOT and meta["sources"] == ["austen"]
    assert meta["tokenizer"] == "gpt2 (tiktoken, bundled BPE)"
    assert json.loads((out / "meta.json").read_text()) == meta
    for split in ("train", "val"):
        info = meta["splits"][split]
        assert info["shards"], f"{split} has no shard"
        assert sum(s["tokens"] for s in info["shards"]) == info["tokens"]
        for shard in info["shards"]:
            path = out / shard["file"]
            assert read_shard_header(path) == shard["tokens"]
            assert path.stat().st_size == 1024 + 2 * shard["tokens"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
            header = np.fromfile(path, dtype="<i4", count=3)
            assert header.tolist() == [20240520, 1, shard["tokens"]]
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == MAX_TOKENS
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "train_000000.bin", "train_docs.npy", "val_000000.bin", "val_docs.npy"]


def test_eot_starts_every_document(austen: tuple[Path, dict]) -> None:
    out, meta = austen
    for split in ("train", "val"):
        tokens = split_tokens(out, meta, split)
        assert tokens[0] == EOT
        assert int((tokens == EOT).sum()) == meta["splits"][split]["documents"]


def test_documents_never_straddle_the_split(austen: tuple[Path, dict]) -> None:
    out, meta = austen
    train = documents_of(split_tokens(out, meta, "train"))
    val = documents_of(split_tokens(out, meta, "val"))
    n_docs = meta["documents"]
    assert len(train) + len(val) == n_docs
    enc = gpt2_encoding()
    texts = [text for text, _ in zip(iter_source("austen"), range(n_docs))]
    expected = [tuple(enc.encode_ordinary(t)) for t in texts]
    last_len = MAX_TOKENS - sum(len(d) + 1 for d in expected[:-1]) - 1
    expected[-1] = expected[-1][:last_len]  # the cap cuts the last document short
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(expected)
    wanted_val = [doc for doc, t in zip(expected, texts) if document_goes_to_val(t, VAL_FRACTION)]
    assert val == wanted_val and not meta["val_fallback_used"]
    assert train == [doc for doc in expected if doc not in wanted_val]  # source order kept


def test_prepare_is_deterministic_and_worker_independent(austen: tuple[Path, dict], tmp_path: Path) -> None:
    _, meta = austen
    again = prepare(
        ["austen"], tmp_path, max_tokens=MAX_TOKENS, val_fraction=VAL_FRACTION, workers=2, progress=False
    )
    assert again == meta


_FORK_MARKERS: list[Path] = []  # while set, a fork of this process leaves a file in this folder


def _mark_a_forked_child() -> None:
    if _FORK_MARKERS:
        (_FORK_MARKERS[0] / str(os.getpid())).touch()


os.register_at_fork(after_in_child=_mark_a_forked_child)


def test_tokenizer_workers_are_not_forks_of_the_caller(tmp_path: Path) -> None:
    """A fork of a process with threads (a gloo group, PyTorch's pools) can deadlock in the child;
    a suite calls prepare from such a process, so its workers must start from a clean one."""
    markers = tmp_path / "forked"
    markers.mkdir()
    _FORK_MARKERS.append(markers)
    try:
        meta = prepare(["austen"], tmp_path / "out", max_tokens=5_000, workers=2, progress=False)
    finally:
        _FORK_MARKERS.clear()
    assert meta["splits"]["train"]["tokens"] > 0
    assert list(markers.iterdir()) == [], "a tokenizer worker was forked from the calling process"


def test_small_shards_split_a_split(tmp_path: Path, austen: tuple[Path, dict]) -> None:
    _, reference = austen
    meta = prepare(
        ["austen"], tmp_path, max_tokens=MAX_TOKENS, val_fraction=VAL_FRACTION,
        workers=1, shard_tokens=7_000, progress=False,
    )
    train = meta["splits"]["train"]
    assert [s["tokens"] for s in train["shards"][:-1]] == [7_000] * (len(train["shards"]) - 1)
    assert 0 < train["shards"][-1]["tokens"] <= 7_000
    assert np.array_equal(split_tokens(tmp_path, meta, "train"), split_tokens(*austen, "train"))
    assert train["tokens"] == reference["splits"]["train"]["tokens"]


def test_val_fallback_takes_last_document(tmp_path: Path) -> None:
    texts = ["First little document.", "Second one, a bit longer.", "Third and last."]
    for i, text in enumerate(texts):
        (tmp_path / f"doc{i}.txt").write_text(text)
    meta = prepare([str(tmp_path / "doc*.txt")], tmp_path / "out", val_fraction=1e-12, workers=1, progress=False)
    assert meta["val_fallback_used"]
    assert meta["splits"]["val"]["documents"] == 1 and meta["splits"]["train"]["documents"] == 2
    val = split_tokens(tmp_path / "out", meta, "val")
    assert documents_of(val) == [tuple(gpt2_encoding().encode_ordinary(texts[-1]))]


def test_refuses_existing_dataset_unless_overwrite(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Some words for a tiny dataset.")
    (tmp_path / "b.txt").write_text("Some other words.")
    sources = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    out = tmp_path / "out"
    prepare(sources, out, workers=1, progress=False)
    with pytest.raises(RabenchError, match="already holds a prepared dataset") as info:
        prepare(sources, out, workers=1, progress=False)
    assert str(out) in str(info.value)
    (out / "notes.txt").write_text("mine")
    meta = prepare(sources[::-1], out, workers=1, progress=False, overwrite=True, val_fraction=0.5)
    assert meta["sources"] == sources[::-1] and (out / "val_000000.bin").exists()
    assert (out / "notes.txt").read_text() == "mine" and not list(out.glob(".prepare-*"))  # swapped in, nothing else


def test_refuses_an_empty_val_split(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("A single document cannot fill two splits.")
    out = tmp_path / "out"
    with pytest.raises(RabenchError, match="val split would hold no tokens") as info:
        prepare([str(tmp_path / "a.txt")], out, workers=1, progress=False)
    assert "\n" not in str(info.value)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a.txt"]  # nothing half-written is left, beside out either


def test_records_each_documents_source(tmp_path: Path) -> None:
    """Two JSONL sources, one with "source" fields: per-document ids in {split}_docs.npy name meta's source_names."""
    english = [{"text": f"English text number {i}, plain words.", "source": f"prose/book{i % 2}/{i}"} for i in range(12)]
    code = [{"text": f"int f{i}(void) {{ return {i}; }}"} for i in range(9)]
    (tmp_path / "english.jsonl").write_text("".join(json.dumps(r) + "\n" for r in english))
    (tmp_path / "code.jsonl.xz").write_bytes(__import__("lzma").compress("".join(json.dumps(r) + "\n" for r in code).encode()))
    out = tmp_path / "out"
    meta = prepare([str(tmp_path / "english.jsonl"), str(tmp_path / "code.jsonl.xz")], out, val_fraction=0.3,
                   workers=1, progress=False)
    assert meta["source_names"] == ["english/prose", "code"]
    enc = gpt2_encoding()
    labelled = [(0, r["text"]) for r in english] + [(1, r["text"]) for r in code]
    for split in ("train", "val"):
        rows = np.load(out / meta["splits"][split]["documents_index"]["file"])
        tokens = split_tokens(out, meta, split)
        assert len(rows) == meta["splits"][split]["documents"] and rows[0, 0] == 0
        assert np.array_equal(np.flatnonzero(tokens == EOT), rows[:, 0])  # one start per document, at its EOT
        by_text = {tuple(enc.encode_ordinary(text)): sid for sid, text in labelled}
        for (start, sid), doc in zip(rows, documents_of(tokens)):
            assert by_text[doc] == sid


def test_failed_prepare_leaves_no_shards(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "A fine document."}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    out = tmp_path / "out"
    with pytest.raises(RabenchError, match=f"{bad}:2"):
        prepare([str(good), str(bad)], out, workers=1, shard_tokens=2, progress=False)
    assert sorted(tmp_path.iterdir()) == [bad, good]  # no out, no staging folder beside it


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"sources": []}, "no sources"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"shard_tokens": 0}, "shard_tokens"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    args = {"sources": ["austen"], "out_dir": tmp_path, "progress": False} | kwargs
    with pytest.raises(RabenchError, match=pattern):
        prepare(**args)


def _two_doc_dataset(tmp_path: Path) -> Path:
    for name, text in (("a.txt", "Some words for a tiny dataset."), ("b.txt", "Some other words, and more.")):
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    prepare([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], out, workers=1, progress=False)
    return out


def test_token_range_check_names_the_shard(tmp_path: Path) -> None:
    from rabench.data import TokenSplit, check_token_range, write_shard

    out = _two_doc_dataset(tmp_path)
    check_token_range(TokenSplit(out, "train"))  # clean data passes
    shard = out / "train_000000.bin"
    tokens = np.array(open_shard(shard))
    tokens[-1] = 50300  # inside the model's padded 50304 rows: would train silently
    write_shard(shard, tokens)
    with pytest.raises(RabenchError, match=r"train_000000.bin holds token id 50300, outside the GPT-2 vocabulary") as info:
        check_token_range(TokenSplit(out, "train"))
    assert "\n" not in str(info.value)
    check_token_range(TokenSplit(out, "val"))  # the other split is untouched


def test_verify_checksums(tmp_path: Path) -> None:
    from rabench.data import verify_checksums

    out = _two_doc_dataset(tmp_path)
    assert verify_checksums(out) == 4  # two shards, two document indexes
    shard = out / "val_000000.bin"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 1  # same length, one bit flipped
    shard.write_bytes(bytes(raw))
    with pytest.raises(RabenchError, match=r"checksum mismatch for .*val_000000.bin"):
        verify_checksums(out)
    (out / "train_docs.npy").unlink()
    with pytest.raises(RabenchError, match=r"missing file .*(train_docs.npy|val_000000.bin)|checksum mismatch"):
        verify_checksums(out)
    with pytest.raises(RabenchError, match="not a prepared data folder"):
        verify_checksums(tmp_path)


def test_prepare_verifies_what_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard that reads back differently from what was hashed is refused, and nothing is left."""
    prepare_module = importlib.import_module("rabench.data.prepare")  # the module; rabench.data.prepare is the function

    real = prepare_module.write_shard

    def faulty_write(path: Path, tokens: np.ndarray) -> str:
        sha = real(path, tokens)
        with open(path, "r+b") as f:  # the disk returns something else than was written
            f.seek(-1, 2)
            f.write(b"\xff")
        return sha

    monkeypatch.setattr(prepare_module, "write_shard", faulty_write)
    (tmp_path / "a.txt").write_text("One document here.")
    (tmp_path / "b.txt").write_text("And a second one.")
    out = tmp_path / "out"
    with pytest.raises(RabenchError, match="checksum mismatch"):
        prepare([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], out, workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no out, no staging folder beside it


def test_repeated_token_share_matches_poisson_coverage_and_a_simulation():
    import math

    import numpy as np

    from rabench.data.regime import data_regime, epochs, repeated_token_share

    assert repeated_token_share(0.0) == 0.0
    assert math.isnan(repeated_token_share(epochs(10, 0)))
    assert abs(repeated_token_share(0.6) - 0.2480) < 1e-3
    # a simulation of single-token draws with replacement agrees with the closed form
    rng = np.random.default_rng(0)
    n, x = 20_000, 1.5
    draws = rng.integers(0, n, size=int(x * n))
    simulated = 1 - len(np.unique(draws)) / len(draws)
    assert abs(simulated - repeated_token_share(x)) < 0.01
    regime = data_regime({"sources": ["austen"], "splits": {"train": {"tokens": 900}, "val": {"tokens": 100}}})
    assert regime == {"sources": ["austen"], "train_tokens": 900, "val_tokens": 100}


def test_token_range_is_checked_against_a_smaller_models_vocabulary(tmp_path, austen_data):
    import shutil

    import pytest

    from rabench.data import TokenSplit
    from rabench.data.checks import check_token_range
    from rabench.errors import RabenchError

    out = tmp_path / "data"
    shutil.copytree(austen_data(20_000), out)
    check_token_range(TokenSplit(out, "train"))  # GPT-2 ids pass GPT-2's limit
    with pytest.raises(RabenchError, match=r"outside the model's vocabulary of 512 \(ids < 512\)"):
        check_token_range(TokenSplit(out, "train"), 512)  # and not a 512-id model's
