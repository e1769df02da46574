"""Data layer: sources -> GPT-2 tokens -> llm.c shards -> deterministic batches."""

from rabench.data.checks import check_token_range, verify_checksums
from rabench.data.loader import DocumentIndex, TokenSplit, check_split_fits, step_batches, train_batch
from rabench.data.meta import META_FILE, load_meta
from rabench.data.prepare import prepare, prepare_bundled_austen
from rabench.data.shards import open_shard, read_shard_header, write_shard
from rabench.data.sources import HF_ALIASES, check_sources, iter_documents, iter_source, parse_hf_spec
from rabench.data.tokenizer import EOT, VOCAB_SIZE, gpt2_encoding

__all__ = [
    "EOT",
    "HF_ALIASES",
    "META_FILE",
    "VOCAB_SIZE",
    "DocumentIndex",
    "TokenSplit",
    "check_sources",
    "check_split_fits",
    "check_token_range",
    "gpt2_encoding",
    "iter_documents",
    "iter_source",
    "load_meta",
    "open_shard",
    "parse_hf_spec",
    "prepare",
    "prepare_bundled_austen",
    "read_shard_header",
    "step_batches",
    "train_batch",
    "verify_checksums",
    "write_shard",
]
