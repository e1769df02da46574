import os
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels can only run under Triton's interpreter, which must be
# switched on before anything imports triton.  On a GPU machine it stays off: the kernels
# compile for the card and the interpreter tests skip themselves (tests/test_kernel.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py importable as `reference`


@pytest.fixture(scope="session")
def austen_data(tmp_path_factory: pytest.TempPathFactory):
    """`austen_data(max_tokens)`: the bundled Austen corpus prepared once per token cap for the
    whole session (tests read it, never write into it)."""
    from rabench.data import prepare

    made: dict[int, str] = {}

    def make(max_tokens: int) -> str:
        if max_tokens not in made:
            out = tmp_path_factory.mktemp("austen") / str(max_tokens)
            prepare(["austen"], out, max_tokens=max_tokens, progress=False)
            made[max_tokens] = str(out)
        return made[max_tokens]

    return make


@pytest.fixture
def poison_kernel_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tensor the kernel launchers allocate starts as NaN: an unwritten element shows up."""
    from rabench.kernels import buffers

    allocate = buffers.empty

    def nan_empty(*args, **kwargs):
        t = allocate(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(buffers, "empty", nan_empty)

