"""The eager launch path (rabench.kernels.launching._launch_eager and its kept binaries) with stand-in
kernels: which launches autotune, which go through Triton's dispatch, which call the kept binary,
with what arguments in what order.  Runs on any machine; tests/test_gpu.py checks the real
kernels through the same path on a GPU."""

from __future__ import annotations

import pytest
import torch
import triton

from rabench.kernels import launching, tuning


class Binary:
    """A compiled kernel: binary[grid](*args) records the launch.  Like Triton's
    CompiledKernel (3.6), it reads grid[0], grid[1] and grid[2]: a 2-D grid fails there, as it
    did on an H100 (JITFunction.run pads the grid to three; CompiledKernel does not)."""

    def __init__(self) -> None:
        self.launches: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args: self.launches.append(((grid[0], grid[1], grid[2]), args))


class Kernel:
    """A @triton.jit function: kernel[grid](*args, **kw) dispatches (recorded) and returns a binary."""

    def __init__(self, arg_names: list[str], returns_binary: bool = True) -> None:
        self.arg_names = arg_names
        self.dispatches: list[tuple] = []
        self.binaries: list[Binary] = []
        self.returns_binary = returns_binary

    def __getitem__(self, grid):
        def run(*args, **kw):
            self.dispatches.append((grid, args, kw))
            self.binaries.append(Binary())
            return self.binaries[-1] if self.returns_binary else None
        return run


class Tuner(Kernel):
    """An autotuned kernel: its launches are the autotuner's, and it reports a winner."""

    best_config = triton.Config(dict(BLOCK_M=32, BLOCK_N=16), num_warps=4, num_stages=3)


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    monkeypatch.setattr(launching, "_EAGER_BIN", {})
    monkeypatch.setattr(launching, "_EAGER_CFG", {})


@pytest.fixture
def stand_ins(monkeypatch):
    """The forward kernel and its autotuner replaced by stand-ins: (raw kernel, tuner)."""
    raw = Kernel(["X", "n", "D1", "BLOCK_M", "BLOCK_N", "INTERP"])
    tuner = Tuner(raw.arg_names)
    monkeypatch.setattr(tuning, "RAW", dict(tuning.RAW, fwd=raw))
    monkeypatch.setattr(tuning, "tuned_kernel", lambda name, size: tuner)
    return raw, tuner


def launch(args):
    launching._launch_eager("fwd", "small", 100, 6, args, {"D1": 64})


def test_first_launch_autotunes_second_dispatches_with_the_winner_third_calls_the_binary(stand_ins):
    raw, tuner = stand_ins
    x = torch.zeros(64)
    for _ in range(4):
        launch((x, 5))
    assert len(tuner.dispatches) == 1 and len(raw.dispatches) == 1
    grid, args, kw = raw.dispatches[0]
    assert grid == (6, 4)  # cdiv(100 rows, the winner's BLOCK_M = 32)
    assert kw == {"D1": 64, "BLOCK_M": 32, "BLOCK_N": 16, "INTERP": False, "num_warps": 4, "num_stages": 3}
    # the kept binary gets every parameter positionally, in the kernel's order
    assert raw.binaries[0].launches == [((6, 4, 1), (x, 5, 64, 32, 16, False))] * 2


@pytest.mark.parametrize("change", ["int value", "alignment", "dtype"])
def test_anything_triton_specializes_on_gets_its_own_binary(stand_ins, change):
    raw, tuner = stand_ins
    x = torch.zeros(64)
    other = {"int value": (x, 16), "alignment": (x[1:], 5),  # 4 bytes past a 16-byte boundary
             "dtype": (x.double(), 5)}[change]
    for args in [(x, 5)] * 3 + [other] * 3:
        launch(args)
    assert len(tuner.dispatches) == 2 and len(raw.dispatches) == 2
    assert [len(b.launches) for b in raw.binaries] == [1, 1]


def test_a_launch_missing_a_constexpr_or_a_binary_is_never_kept():
    x = torch.zeros(64)
    partial = Kernel(["X", "n", "A", "B"])  # B left to its default: the binary's argument list would be short
    no_binary = Kernel(["X", "n", "A"], returns_binary=False)
    for _ in range(3):
        for kernel in (partial, no_binary):
            launching._launch_fixed(("k", id(kernel)), kernel, 1, 1, 1, (x, 5), {"A": 1})
    assert len(partial.dispatches) == 3 and len(no_binary.dispatches) == 3
    assert launching._EAGER_BIN == {}


def test_real_tensors_and_parameters_are_eager_fake_tensors_are_not():
    """The gate kernels' first argument is the gate logits, a Parameter: a launch on one takes the
    kept-binary path (on an H100 the gated route's gate launches went through wrap_triton while a
    Parameter did not count as eager); torch.compile's fake tensors never do."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x = torch.zeros(3)
    assert launching.is_eager((x,)) and launching.is_eager((torch.nn.Parameter(x),))
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
    assert not launching.is_eager((fake,))
