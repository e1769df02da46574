"""The eager launch cache (rabench.kernels.op._direct) with a stand-in kernel: which launches go
through Triton's dispatch, which call the kept binary, and in what argument order.  Runs on any
machine; tests/test_gpu.py checks the real kernels through it on a GPU."""

from __future__ import annotations

import pytest
import torch

from rabench.kernels import op as kop


class Binary:
    """A compiled kernel: binary[grid](*args) records the launch."""

    def __init__(self) -> None:
        self.launches: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args: self.launches.append((grid, args))


class Kernel:
    """A @triton.jit function: kernel[grid](*args, **kw) dispatches (recorded) and returns a binary."""

    arg_names = ["X", "n", "A", "B"]  # two runtime arguments, then two constexprs

    def __init__(self, returns_binary: bool = True) -> None:
        self.dispatches: list[tuple] = []
        self.binaries: list[Binary] = []
        self.returns_binary = returns_binary

    def __getitem__(self, grid):
        def run(*args, **kw):
            self.dispatches.append((grid, args, kw))
            self.binaries.append(Binary())
            return self.binaries[-1] if self.returns_binary else None
        return run


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(kop, "_EAGER_BIN", {})


def test_second_launch_calls_the_binary_with_constexprs_in_the_kernels_order():
    k, x = Kernel(), torch.zeros(64)
    kop._direct(k, (2, 1), (x, 5), {"B": 2, "A": 1}, num_warps=4)
    kop._direct(k, (3, 1), (x, 5), {"B": 2, "A": 1}, num_warps=4)
    assert len(k.dispatches) == 1
    assert k.dispatches[0][2] == {"B": 2, "A": 1, "num_warps": 4}
    assert k.binaries[0].launches == [((3, 1), (x, 5, 1, 2))]  # A before B, as the kernel declares


@pytest.mark.parametrize("change", ["int value", "alignment", "dtype", "constexpr", "option"])
def test_anything_triton_specializes_on_dispatches_again(change):
    k, x = Kernel(), torch.zeros(64)
    base = dict(args=(x, 5), constexprs={"A": 1, "B": 2}, options={"num_warps": 4})
    other = {"int value": dict(base, args=(x, 16)),
             "alignment": dict(base, args=(x[1:], 5)),  # 4 bytes past a 16-byte boundary
             "dtype": dict(base, args=(x.double(), 5)),
             "constexpr": dict(base, constexprs={"A": 1, "B": 3}),
             "option": dict(base, options={"num_warps": 8})}[change]
    for call in (base, other, other):
        kop._direct(k, (1,), call["args"], call["constexprs"], **call["options"])
    assert len(k.dispatches) == 2  # the changed call dispatched once, then hit its own binary
    assert len(k.binaries[1].launches) == 1 and not k.binaries[0].launches


def test_a_launch_missing_a_constexpr_or_a_binary_is_never_cached():
    x = torch.zeros(64)
    partial = Kernel()  # B left to its default: the binary's argument list would be short
    no_binary = Kernel(returns_binary=False)
    for _ in range(3):
        kop._direct(partial, (1,), (x, 5), {"A": 1})
        kop._direct(no_binary, (1,), (x, 5), {"A": 1, "B": 2})
    assert len(partial.dispatches) == 3 and len(no_binary.dispatches) == 3
    assert kop._EAGER_BIN == {}
