"""The entry point of the suite's worker processes: `python -m rabench.suite.worker train CONFIG_JSON`
(one run, parallel.py) and `python -m rabench.suite.worker calibrate REQUEST_JSON BASELINE OUT_FILE`
(calibrate.py).

A module of its own, which the package never imports: `python -m` first imports the package
`rabench.suite`, whose __init__ imports parallel.py and calibrate.py, and running a module that is
already imported makes runpy print a RuntimeWarning into every run's train.log.
"""

from __future__ import annotations

import sys

KINDS = ("train", "calibrate")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in KINDS:
        print(f"usage: python -m rabench.suite.worker {{{','.join(KINDS)}}} ARGS (the suite starts these)", file=sys.stderr)
        return 2
    if argv[0] == "train":
        from rabench.suite.parallel import worker_main
    else:
        from rabench.suite.calibrate import worker_main
    return worker_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
