"""RABENCH_TEST_SHARD (lab/pytest_shard.py, loaded with `-p pytest_shard`): the shards the GPU
suite runs side by side partition the collected tests, so no test is lost or run twice."""
import os
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).parent
TESTS = LAB.parent / "tests"


def collect(shard: str | None, *files: str) -> subprocess.CompletedProcess:
    """`pytest -p pytest_shard --collect-only` over `files` (in tests/) with RABENCH_TEST_SHARD=shard
    (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "RABENCH_TEST_SHARD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB), env.get("PYTHONPATH")]))
    if shard is not None:
        env["RABENCH_TEST_SHARD"] = shard
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "pytest_shard",
                           *(str(TESTS / f) for f in files)], capture_output=True, text=True, env=env, cwd=TESTS.parent)


def collected(shard: str | None) -> list[str]:
    out = collect(shard, "test_schedule.py", "test_rundir.py")
    return [line for line in out.stdout.splitlines() if "::" in line]


def test_shards_partition_the_collected_tests():
    whole = collected(None)
    shards = [collected(f"{k}/3") for k in range(3)]
    assert len(whole) > 6
    assert sorted(sum(shards, [])) == sorted(whole)
    assert all(shards) and max(map(len, shards)) - min(map(len, shards)) <= 1


def test_a_malformed_shard_is_refused():
    out = collect("3/3", "test_schedule.py")
    assert out.returncode != 0 and "needs 0 <= k < n" in out.stdout + out.stderr


def test_a_shard_prints_a_failure_at_once(tmp_path: Path):
    """A failure's reason is in the log before the run's end summary (a shard cut by a timeout
    never prints that summary)."""
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert 1 + 1 == 3, 'arithmetic moved'\n"
                                           "\n\ndef test_passes():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "RABENCH_TEST_SHARD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LAB), env.get("PYTHONPATH")]))
    env["RABENCH_TEST_SHARD"] = "0/1"
    out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "pytest_shard",
                          str(tmp_path / "test_fails.py")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 1
    head = out.stdout.split("= FAILURES =")[0]  # the log before pytest's own summary
    assert "--- test_fails.py::test_fails failed (call):" in head and "arithmetic moved" in head
    assert "test_passes failed" not in out.stdout
