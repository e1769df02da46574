"""Turn SOURCE specs into a stream of documents (strings).

A spec is one of:
  austen                 the Jane Austen chapters shipped with rabench
  FILE.jsonl[.xz|.gz]    JSON Lines, one document a line in its "text" field
  FILE or GLOB           plain text (optionally .xz/.gz), one file = one document
  hf:NAME[:CONFIG]       a Hugging Face dataset, streamed (needs `datasets`)

Documents come lazily so that a token cap can stop reading early, which is what
makes streaming a 10B-token web corpus practical.

Each document also has a source label, its domain for per-source evaluation: the spec's
short name (`english-mix` for .../english-mix.jsonl.xz), followed, when the JSON line has
a "source" field, by that field's first path component (`english-mix/gcide`,
`kernel-c/linux`). The first component names the origin (a package, a corpus); the full
field names a single file or chapter, far too fine for a domain.
"""

from __future__ import annotations

import glob
import gzip
import json
import lzma
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import IO

from rabench.errors import RabenchError

TEXT_FIELD = "text"
SOURCE_FIELD = "source"

# Short names for the corpora people usually mean: name -> (dataset, config).
HF_ALIASES: dict[str, tuple[str, str | None]] = {
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
    "tinystories": ("roneneldan/TinyStories", None),
    "openwebtext": ("Skylion007/openwebtext", None),
}

SPEC_HELP = "austen, FILE.jsonl[.xz|.gz], a text file or glob, or hf:NAME[:CONFIG]"


def iter_documents(specs: Iterable[str]) -> Iterator[str]:
    """All documents of all specs, in the order given."""
    for spec in specs:
        yield from iter_source(spec)


def iter_labelled_documents(specs: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(source label, text) of all documents of all specs, in the order given."""
    for spec in specs:
        base = spec_label(spec)
        for tag, text in _iter_tagged(spec):
            yield source_label(base, tag), text


def spec_label(spec: str) -> str:
    """A spec's short name: a file's name without .jsonl/.txt/.xz/.gz; austen, hf: and globs as given."""
    if spec == "austen" or spec.startswith("hf:") or any(ch in spec for ch in "*?["):
        return spec
    name = Path(spec).name
    for suffix in (".xz", ".gz", ".jsonl", ".txt"):
        name = name.removesuffix(suffix)
    return name or spec


def source_label(base: str, tag: str | None) -> str:
    """base, or base/<first component of the line's source field> (once, if they coincide)."""
    if not tag:
        return base
    first = tag.strip("/").split("/")[0]
    return base if not first or first == base else f"{base}/{first}"


def check_sources(specs: Iterable[str]) -> None:
    """Fail fast on specs that name missing files or malformed hf: names, before any work starts."""
    for spec in specs:
        if spec.startswith("hf:"):
            parse_hf_spec(spec)
        elif spec != "austen":
            resolve_paths(spec)


def iter_source(spec: str) -> Iterator[str]:
    """Documents of one spec; raises RabenchError for anything the user can fix."""
    for _, text in _iter_tagged(spec):
        yield text


def _iter_tagged(spec: str) -> Iterator[tuple[str | None, str]]:
    """(the line's "source" field or None, text) of each document of one spec."""
    if spec == "austen":
        yield from _iter_bundled_austen()
    elif spec.startswith("hf:"):
        for text in iter_hf(spec):
            yield None, text
    else:
        for path in resolve_paths(spec):
            yield from iter_file(path)


def _iter_bundled_austen() -> Iterator[tuple[str | None, str]]:
    with resources.as_file(resources.files("rabench.data") / "assets" / "austen.jsonl.xz") as path:
        yield from iter_jsonl_records(path)


def resolve_paths(spec: str) -> list[Path]:
    """The files a path or glob names; glob matches sorted so the document order is reproducible."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        raise RabenchError(f"source {spec!r} is a folder; give files or a glob such as '{spec}/*.txt'")
    if any(ch in spec for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise RabenchError(f"source {spec!r}: the glob matches no files; check the pattern")
        return matches
    raise RabenchError(f"source {spec!r}: no such file and not a known source; use {SPEC_HELP}")


def is_jsonl(path: Path) -> bool:
    """True for NAME.jsonl, NAME.jsonl.xz and NAME.jsonl.gz."""
    name = path.name.lower()
    for suffix in (".xz", ".gz"):
        name = name.removesuffix(suffix)
    return name.endswith(".jsonl")


def open_text(path: Path) -> IO[str]:
    """Open a UTF-8 text file, decompressing .xz and .gz on the fly."""
    name = path.name.lower()
    if name.endswith(".xz"):
        return lzma.open(path, "rt", encoding="utf-8")
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_file(path: Path) -> Iterator[tuple[str | None, str]]:
    """(source tag, text) of one file's documents, turning read and decode failures into one-line errors."""
    reader = iter_jsonl_records(path) if is_jsonl(path) else ((None, text) for text in iter_text_file(path))
    try:
        yield from reader
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as e:
        # OSError also covers gzip.BadGzipFile.
        raise RabenchError(f"{path}: cannot read ({type(e).__name__}: {e}); check the file is intact") from e


def iter_jsonl_records(path: Path) -> Iterator[tuple[str | None, str]]:
    """(the "source" field if it is a string, else None; the non-empty "text") of each line."""
    count = 0
    with open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            tag, text = _record_of_json_line(path, line_number, line)
            if text:
                count += 1
                yield tag, text
    if count == 0:
        raise RabenchError(f"{path} holds no documents (no line with a non-empty {TEXT_FIELD!r}); check the file")


def _record_of_json_line(path: Path, line_number: int, line: str) -> tuple[str | None, str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise RabenchError(f"{path}:{line_number}: corrupt JSON ({e.msg}); fix or delete that line") from None
    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
        raise RabenchError(f"{path}:{line_number}: no {TEXT_FIELD!r} string field; every line needs one")
    tag = record.get(SOURCE_FIELD)
    return (tag if isinstance(tag, str) else None), record[TEXT_FIELD]


def iter_text_file(path: Path) -> Iterator[str]:
    """A plain text file as a single document."""
    with open_text(path) as f:
        text = f.read()
    if not text.strip():
        raise RabenchError(f"{path} is empty; remove it from the sources")
    yield text


def parse_hf_spec(spec: str) -> tuple[str, str | None]:
    """'hf:NAME[:CONFIG]' -> (dataset, config), expanding the short aliases."""
    name, _, config = spec.removeprefix("hf:").partition(":")
    if not name:
        raise RabenchError(f"source {spec!r}: give a dataset, e.g. hf:fineweb-edu or hf:owner/name[:config]")
    if name in HF_ALIASES:
        dataset, default_config = HF_ALIASES[name]
        return dataset, config or default_config
    return name, config or None


def iter_hf(spec: str) -> Iterator[str]:
    """Stream the train split of a Hugging Face dataset; the caller stops it at its token cap."""
    dataset, config = parse_hf_spec(spec)
    try:
        import datasets
    except ImportError:
        raise RabenchError(
            f"source {spec!r} needs the Hugging Face datasets package: pip install 'rabench[hf]' (or datasets)"
        ) from None
    try:
        stream = datasets.load_dataset(dataset, config, split="train", streaming=True)
    except Exception as e:  # datasets raises many types (network, missing config, auth)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RabenchError(f"source {spec!r}: cannot open Hugging Face dataset {dataset} ({reason})") from e
    count = 0
    for row in stream:
        text = row.get(TEXT_FIELD) if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise RabenchError(f"source {spec!r}: rows of {dataset} have no {TEXT_FIELD!r} string field")
        if text:
            count += 1
            yield text
    if count == 0:
        raise RabenchError(f"source {spec!r}: dataset {dataset} gave no documents")
