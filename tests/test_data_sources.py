"""SOURCE specs: bundled corpus, JSON Lines (plain/.xz/.gz), text files and globs, hf: streaming."""

from __future__ import annotations

import gzip
import json
import lzma
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from rabench.data import iter_documents, iter_source, parse_hf_spec, prepare
from rabench.errors import RabenchError

RECORDS = [{"text": "Call me Ishmael.", "source": "t"}, {"text": "It was a dark night.\nRain fell."}]
TEXTS = [r["text"] for r in RECORDS]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "wb") as f:
        f.write(data)
    return path


def test_austen_is_bundled() -> None:
    docs = list(iter_source("austen"))
    assert len(docs) == 270
    assert docs[0].startswith("CHAPTER I")


@pytest.mark.parametrize("name", ["plain.jsonl", "packed.jsonl.xz", "packed.jsonl.gz"])
def test_jsonl_formats(tmp_path: Path, name: str) -> None:
    path = write_jsonl(tmp_path / name, [json.dumps(r) for r in RECORDS])
    assert list(iter_source(str(path))) == TEXTS


def test_several_sources_in_order_and_blank_lines_skipped(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl.xz", [json.dumps(RECORDS[0]), "", json.dumps({"text": ""})])
    b = write_jsonl(tmp_path / "b.jsonl.gz", [json.dumps(RECORDS[1])])
    (tmp_path / "c.txt").write_text("A whole file.\n")
    assert list(iter_documents([str(b), str(a), str(tmp_path / "c.txt")])) == [TEXTS[1], TEXTS[0], "A whole file.\n"]


def test_text_glob_is_sorted_one_document_per_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name, text in [("b.txt", "bee"), ("a.txt", "ay"), ("sub/c.txt", "sea"), ("skip.md", "no")]:
        (tmp_path / name).write_text(text)
    assert list(iter_source(str(tmp_path / "*.txt"))) == ["ay", "bee"]
    assert list(iter_source(str(tmp_path / "**" / "*.txt"))) == ["ay", "bee", "sea"]
    with lzma.open(tmp_path / "d.txt.xz", "wt") as f:
        f.write("packed text")
    assert list(iter_source(str(tmp_path / "d.txt.xz"))) == ["packed text"]


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(RabenchError, match="no such file") as info:
        list(iter_source(str(missing)))
    assert str(missing) in str(info.value)


def test_unknown_source_spec() -> None:
    with pytest.raises(RabenchError, match="'fineweb'.*not a known source.*hf:NAME"):
        list(iter_source("fineweb"))


def test_glob_without_matches(tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="matches no files"):
        list(iter_source(str(tmp_path / "*.jsonl")))


def test_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RabenchError, match="is a folder"):
        list(iter_source(str(tmp_path)))


@pytest.mark.parametrize("lines", [None, [], ["", "   "]], ids=["text", "jsonl", "blank-jsonl-xz"])
def test_empty_file_is_named(tmp_path: Path, lines: list[str] | None) -> None:
    if lines is None:
        path = tmp_path / "empty.txt"
        path.write_text("\n")
    else:
        path = write_jsonl(tmp_path / ("empty.jsonl" if not lines else "blank.jsonl.xz"), lines)
    with pytest.raises(RabenchError, match="empty|no documents") as info:
        list(iter_source(str(path)))
    assert str(path) in str(info.value)


def test_corrupt_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl.gz", [json.dumps(RECORDS[0]), "", '{"text": "unterminated'])
    with pytest.raises(RabenchError, match=f"{path}:3: corrupt JSON"):
        list(iter_source(str(path)))


def test_line_without_text_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [json.dumps({"body": "x"})])
    with pytest.raises(RabenchError, match=f"{path}:1: no 'text'"):
        list(iter_source(str(path)))


def test_truncated_xz_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl.xz", [json.dumps({"text": "word " * 2000})])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(RabenchError, match="cannot read") as info:
        list(iter_source(str(path)))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("hf:fineweb-edu", ("HuggingFaceFW/fineweb-edu", "sample-10BT")),
        ("hf:fineweb-edu:sample-100BT", ("HuggingFaceFW/fineweb-edu", "sample-100BT")),
        ("hf:tinystories", ("roneneldan/TinyStories", None)),
        ("hf:openwebtext", ("Skylion007/openwebtext", None)),
        ("hf:owner/name", ("owner/name", None)),
        ("hf:owner/name:cfg", ("owner/name", "cfg")),
    ],
)
def test_hf_specs(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_hf_spec(spec) == expected


def test_hf_without_datasets_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(RabenchError, match=r"pip install 'rabench\[hf\]' \(or datasets\)"):
        list(iter_source("hf:tinystories"))


class FakeDatasets:
    """Stands in for the `datasets` module: an endless stream that records how it was opened."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.rows_read = 0

    def load_dataset(self, name: str, config: str | None, *, split: str, streaming: bool) -> Iterator[dict]:
        self.calls.append((name, config, split, streaming))
        return self._rows()

    def _rows(self) -> Iterator[dict]:
        i = 0
        while True:
            self.rows_read += 1
            yield {"text": f"Story number {i}. Once upon a time there was a fox.", "id": i}
            i += 1


@pytest.fixture
def fake_datasets(monkeypatch: pytest.MonkeyPatch) -> FakeDatasets:
    fake = FakeDatasets()
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake.load_dataset))
    return fake


def test_hf_streams_with_the_resolved_name(fake_datasets: FakeDatasets) -> None:
    docs = iter_source("hf:fineweb-edu")
    assert [next(docs) for _ in range(3)][2].startswith("Story number 2.")
    assert fake_datasets.calls == [("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)]


@pytest.mark.parametrize("workers", [1, 2])
def test_token_cap_stops_an_endless_hf_stream(fake_datasets: FakeDatasets, tmp_path: Path, workers: int) -> None:
    meta = prepare(["hf:tinystories"], tmp_path, max_tokens=3_000, workers=workers, progress=False)
    assert meta["tokens"] == 3_000
    assert meta["splits"]["val"]["documents"] >= 1
    # An uncapped reader would never return; the pipelined one reads at most one (doubled) block ahead.
    assert fake_datasets.rows_read <= 4 * meta["documents"] + 16
    assert fake_datasets.calls == [("roneneldan/TinyStories", None, "train", True)]


def test_hf_rows_without_text(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(load_dataset=lambda *a, **k: iter([{"content": "x"}]))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(RabenchError, match="owner/name.*no 'text'"):
        list(iter_source("hf:owner/name"))


def test_hf_open_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no route to host\nlong details")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fail))
    with pytest.raises(RabenchError, match="cannot open Hugging Face dataset roneneldan/TinyStories") as info:
        list(iter_source("hf:tinystories"))
    assert "\n" not in str(info.value)


def test_prepare_checks_sources_before_creating_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RabenchError, match="missing.txt"):
        prepare(["austen", str(tmp_path / "missing.txt")], out, progress=False)
    assert not out.exists()


def test_source_labels(tmp_path: Path) -> None:
    from rabench.data.sources import iter_labelled_documents, source_label, spec_label

    assert spec_label("../shared/corpus/english-mix.jsonl.xz") == "english-mix"
    assert spec_label("notes/*.txt") == "notes/*.txt" and spec_label("hf:tinystories") == "hf:tinystories"
    assert source_label("english-mix", "gcide/00012") == "english-mix/gcide"
    assert source_label("austen", "austen/emma/001") == "austen" and source_label("x", None) == "x"
    labels = {label for label, _ in iter_labelled_documents(["austen"])}
    assert labels == {"austen"}
    (tmp_path / "a.txt").write_text("plain")
    assert list(iter_labelled_documents([str(tmp_path / "a.txt")])) == [("a", "plain")]


def test_a_cap_reached_before_a_source_names_it(tmp_path: Path, capsys) -> None:
    from rabench.cli import main

    many = write_jsonl(tmp_path / "first.jsonl", [json.dumps({"text": f"Document {i} of the first source, "
                                                              "long enough to fill the cap."}) for i in range(40)])
    later = write_jsonl(tmp_path / "later.jsonl", [json.dumps({"text": "Never read."})])
    meta = prepare([str(many), str(later)], tmp_path / "capped", max_tokens=200, workers=1, progress=False)
    assert meta["sources_not_reached"] == [str(later)]
    full = prepare([str(many), str(later)], tmp_path / "whole", workers=1, progress=False)
    assert full["sources_not_reached"] == []
    assert main(["prepare", str(many), str(later), "--out", str(tmp_path / "cli"), "--max-tokens", "200",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert f"note: --max-tokens 200 was reached before {later}" in out
