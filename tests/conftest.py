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
    from rabench.kernels import op as kop

    def nan_empty(*args, **kwargs):
        t = torch.empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(kop, "_empty", nan_empty)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """RABENCH_TEST_SHARD=k/n keeps every n-th collected test starting at k, so n pytest processes
    side by side share the suite test by test (benchmarks/gpu_bench.sh, PART=t). Dealing out tests
    rather than files spreads each file's slow tests over the shards; whole files made one shard
    run past the device call's limit. A dozen lines here instead of the pytest-shard plugin,
    which the GPU machines (no network) do not have."""
    spec = os.environ.get("RABENCH_TEST_SHARD")
    if not spec:
        return
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise pytest.UsageError(f"RABENCH_TEST_SHARD={spec!r}: expected k/n, e.g. 0/8") from None
    if not 0 <= k < n:
        raise pytest.UsageError(f"RABENCH_TEST_SHARD={spec!r}: needs 0 <= k < n")
    kept = [item for i, item in enumerate(items) if i % n == k]
    config.hook.pytest_deselected(items=[item for i, item in enumerate(items) if i % n != k])
    items[:] = kept
