"""pytest plugin: RABENCH_TEST_SHARD=k/n keeps every n-th collected test starting at k, so n pytest
processes side by side share the suite test by test (lab/gpu_bench.sh, PART=t):

    RABENCH_TEST_SHARD=0/8 PYTHONPATH=src:lab python3 -m pytest -p pytest_shard tests

Dealing out tests rather than files spreads each file's slow tests over the shards; whole files
made one shard run past the device call's limit. A dozen lines here instead of the pytest-shard
plugin, which the GPU machines (no network) do not have.

A shard also prints each failure's traceback the moment the test fails, not only in the summary
at the end: a shard cut by its timeout (or by the device call's) never reaches that summary, and
its failures would be names without a reason."""
import os

import pytest

_config: pytest.Config | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep this shard's tests and report the others as deselected."""
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


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A failure's traceback at once, in the shard's log (see the module docstring)."""
    reporter = _config.pluginmanager.get_plugin("terminalreporter") if _config is not None else None
    if report.failed and reporter is not None and os.environ.get("RABENCH_TEST_SHARD"):
        reporter.write_line(f"\n--- {report.nodeid} failed ({report.when}):\n{report.longreprtext}\n--- end")
