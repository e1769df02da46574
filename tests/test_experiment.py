"""rabench.experiment names what the experiment compares: every name must be a registered
attention, and the module must stay importable before anything else in the package."""
import subprocess
import sys

from rabench import attention, experiment


def test_every_name_the_experiment_compares_is_registered():
    named = ([experiment.BASELINE, experiment.CONTROL, experiment.NOREC] + experiment.PLAN_ATTNS
             + experiment.BENCH_ATTNS + list(experiment.OPEN_TWINS) + list(experiment.OPEN_TWINS.values()))
    missing = sorted(set(named) - set(attention.names()))
    assert not missing, f"not registered: {missing}"


def test_the_default_lists_start_with_the_baseline_and_hold_the_controls():
    assert experiment.PLAN_ATTNS[0] == experiment.BENCH_ATTNS[0] == experiment.BASELINE
    assert {experiment.CONTROL, experiment.NOREC} <= set(experiment.PLAN_ATTNS)
    assert all({ra, twin} <= set(experiment.PLAN_ATTNS) for ra, twin in experiment.OPEN_TWINS.items())


def test_the_module_imports_nothing_from_the_package():
    code = "import sys, rabench.experiment; print(sorted(m for m in sys.modules if m.startswith('rabench.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['rabench.experiment']"
