"""`python -m rabench` is the same as the `rabench` console script."""

from rabench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
