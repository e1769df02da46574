"""One owner per setting: the device resolver, the exit codes, the batch iterator, the preset record."""

from __future__ import annotations

import pytest
import torch

from rabench.cli import main
from rabench.errors import RabenchError
from rabench.training.config import resolve_device

NO_GPU = not torch.cuda.is_available()


def test_resolve_device_reads_auto_and_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_resolve_device_refuses_unknown_names(name: str) -> None:
    with pytest.raises(RabenchError, match="is not one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_resolve_device_refuses_a_missing_gpu(name: str) -> None:
    with pytest.raises(RabenchError, match="PyTorch sees no CUDA GPU"):
        resolve_device(name)


def test_check_command_reads_device_through_the_resolver(capsys) -> None:
    assert main(["check", "sdpa", "--device", "cuda:x"]) == 2
    err = capsys.readouterr().err
    assert "is not one of auto, cpu, cuda, cuda:N" in err and len(err.strip().splitlines()) == 1
