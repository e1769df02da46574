"""The GPT-2 tokenizer, built offline from the BPE files shipped inside the package.

tiktoken's own `get_encoding("gpt2")` downloads the same two files; building the
Encoding from the bundled copies gives identical ids with no network access.
"""

from __future__ import annotations

import functools
from importlib import resources

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from rabench.errors import RabenchError

EOT = 50256  # <|endoftext|>, the only special token of GPT-2
VOCAB_SIZE = 50257
TOKENIZER_NAME = "gpt2 (tiktoken, bundled BPE)"

# GPT-2's pre-tokenizer split pattern, as in OpenAI's original encoder.py.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# SHA-256 that tiktoken pins for the two files; a mismatch means a damaged install.
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 encoding (50,257 tokens, EOT = 50256); built once per process."""
    gpt2_dir = resources.files("rabench.data") / "assets" / "gpt2"
    with resources.as_file(gpt2_dir / "vocab.bpe") as vocab_bpe, resources.as_file(
        gpt2_dir / "encoder.json"
    ) as encoder_json:
        try:
            ranks = data_gym_to_mergeable_bpe_ranks(
                str(vocab_bpe),
                str(encoder_json),
                vocab_bpe_hash=VOCAB_BPE_SHA256,
                encoder_json_hash=ENCODER_JSON_SHA256,
            )
        except (OSError, ValueError) as e:
            raise RabenchError(
                f"cannot load the bundled GPT-2 BPE files in {gpt2_dir} ({e}); reinstall rabench"
            ) from e
    encoding = tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT},
        explicit_n_vocab=VOCAB_SIZE,
    )
    return encoding
