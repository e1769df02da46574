import os
import sys
from pathlib import Path

import torch

# Without a GPU the Triton kernels can only run under Triton's interpreter, which must be
# switched on before anything imports triton.  On a GPU machine it stays off: the kernels
# compile for the card and the interpreter tests skip themselves (tests/test_kernel.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py importable as `reference`
