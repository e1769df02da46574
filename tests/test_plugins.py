"""Plug-in attentions: one resolver for names, entry points, module:Class and file.py:Class;
paired starts for naive cores; the identity a run folder records; `rabench check`; the examples."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from rabench import attention
from rabench.analysis.runs import Run
from rabench.attention import registry
from rabench.cli import main
from rabench.errors import RabenchError
from rabench.model import build_model
from rabench.training.config import TrainConfig, curve_changing_differences
from rabench.suite.folder import run_name

ROOT = Path(__file__).resolve().parent.parent
DIFF = f"{ROOT}/examples/differential/diff_attention.py:DiffAttention"
SIGMOID = f"{ROOT}/examples/sigmoid/sigmoid_attention.py:SigmoidAttention"

NAIVE = '''
import torch
from torch import nn
import torch.nn.functional as F

from rabench.attention import AttentionCore


class NaiveAttention(AttentionCore):
    """SDPA on queries scaled by a per-head parameter drawn the way any PyTorch user would"""

    default_options = {"boost": 1.0}

    def __init__(self, spec):
        super().__init__(spec)
        self.gain = nn.Parameter(torch.randn(spec.n_head, 1, 1) * spec.options["boost"])

    def forward(self, q, k, v, x):
        return F.scaled_dot_product_attention(q * self.gain, k, v, is_causal=True)
'''

PEEKING = '''
from rabench.attention import AttentionCore


class PeekingAttention(AttentionCore):
    """Every position sees the mean of all values, future ones included"""

    def forward(self, q, k, v, x):
        return v + v.mean(dim=-2, keepdim=True)
'''


def write_plugin(folder: Path, source: str, name: str = "plugin.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def core_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if ".core." in n}


def shared_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters() if ".core." not in n}


def test_a_naive_plugin_gets_paired_starts(tmp_path: Path) -> None:
    """nn.Parameter(torch.randn(...)) in __init__: a function of the seed, never of the global RNG."""
    ref = f"{write_plugin(tmp_path, NAIVE)}:NaiveAttention"
    torch.manual_seed(1)
    a = build_model("tiny", ref, None, seed=4)
    torch.manual_seed(2)
    torch.rand(5)
    b = build_model("tiny", ref, None, seed=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    cores = core_params(a)
    assert len(cores) == 2 and not torch.equal(*cores.values())  # layers draw from their own streams
    other = core_params(build_model("tiny", ref, None, seed=5))
    assert all(not torch.equal(p, other[n]) for n, p in cores.items())
    sdpa = shared_params(build_model("tiny", "sdpa", None, seed=4))
    assert all(torch.equal(p, sdpa[n]) for n, p in shared_params(a).items())


def test_building_a_core_leaves_the_global_rng_as_it_was(tmp_path: Path) -> None:
    from rabench.model.gpt import build_core

    ref = f"{write_plugin(tmp_path, NAIVE)}:NaiveAttention"
    torch.manual_seed(3)
    before = torch.random.get_rng_state()
    build_core(ref, attention.AttentionSpec(2, 32, 64, 0, 2), seed=0)
    assert torch.equal(before, torch.random.get_rng_state())


def test_module_and_entry_point_references_resolve_to_the_same_class(tmp_path: Path, monkeypatch) -> None:
    write_plugin(tmp_path, NAIVE, "naive_plugin_mod.py")
    dist = tmp_path / "naive_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: naive-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rabench.attentions]\nnaive = naive_plugin_mod:NaiveAttention\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "naive" in attention.names() and "naive" not in registry.builtin_names()
    by_module, by_entry_point = attention.entry("naive_plugin_mod:NaiveAttention"), attention.entry("naive")
    assert by_module.cls is by_entry_point.cls and by_entry_point.plugin
    assert by_entry_point.attn_role == "candidate" and by_entry_point.defaults == {"boost": 1.0}
    assert attention.resolve_options("naive", {"boost": "0.5"}) == {"boost": 0.5}
    assert run_name("naive", 0) == "naive-s0"


def test_builtins_declare_what_plugins_declare() -> None:
    e = attention.entry("ra-norec")
    assert (e.attn_role, e.cls.role, e.cls.default_options) == ("control", "control", {"backend": "folded"})
    assert attention.entry("sdpa").attn_role == "baseline" and attention.entry("ra-triton").attn_role == "ra"
    assert attention.entry("ra-local").attn_role == "ra-variant" and attention.entry("ra-triton").cls.needs_gpu


@pytest.mark.parametrize("ref, message", [
    ("no-such-attention", "unknown attention"),
    ("missing/file.py:Foo", "no file missing/file.py"),
    ("no_such_module_xyz:Foo", "no module named 'no_such_module_xyz'"),
    ("{plugin}:Missing", "defines no 'Missing'"),
    ("{plugin}:torch", "is not a subclass of rabench.attention.AttentionCore"),
    ("{broken}:Foo", "ZeroDivisionError"),
])
def test_bad_references_fail_in_one_line(ref: str, message: str, tmp_path: Path, capsys) -> None:
    ref = ref.format(plugin=write_plugin(tmp_path, NAIVE), broken=write_plugin(tmp_path, "1 / 0\n", "broken.py"))
    with pytest.raises(RabenchError, match=message.replace("(", r"\(")):
        attention.entry(ref)
    assert main(["attentions", ref]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.startswith("rabench: error: ") and len(err.splitlines()) == 1


def test_folder_names_come_from_the_reference_alone() -> None:
    assert attention.folder_name("sdpa") == "sdpa"
    assert attention.folder_name("x/y/diff_attention.py:DiffAttention") == "diff-attention"
    assert attention.folder_name("pkg.mod:QKNormSigmoid") == "qk-norm-sigmoid"
    assert run_name("x/diff.py:DiffAttention", 2, "iso-time") == "diff-attention-isotime-s2"


def test_config_records_the_attention_identity_and_a_changed_file_changes_the_curve(tmp_path: Path) -> None:
    path = write_plugin(tmp_path, NAIVE)
    ref = f"{path}:NaiveAttention"
    cfg = TrainConfig(attn=ref, data=str(tmp_path), out=str(tmp_path / "run"), preset="tiny", max_iters=5,
                      labels={"role": "iso-iter"}, device="cpu")  # "auto" would be cuda on a GPU machine
    stored = json.loads(json.dumps(cfg.resolved().to_dict()))
    assert stored["attn_ref"] == ref and len(stored["attn_code_hash"]) == 12
    assert stored["labels"] == {"attn_role": "candidate", "role": "iso-iter"}
    stored["device"] = "cpu"
    assert curve_changing_differences(stored, cfg) == []
    path.write_text(path.read_text().replace("* spec.options", "* 0.5 * spec.options"))
    diffs = curve_changing_differences(stored, cfg)
    assert len(diffs) == 1 and diffs[0].startswith("attn_code_hash:")
    del stored["attn_code_hash"]  # a folder written before the hash was recorded is not refused for lacking it
    assert curve_changing_differences(stored, cfg) == []


def test_a_run_resumed_from_another_directory_keeps_its_plugin_and_data(tmp_path: Path, monkeypatch) -> None:
    """A relative plug-in path and data folder, stored from one directory, read again from a
    sub-directory: the same file and folder, so the same curve (the code hash still decides)."""
    path = write_plugin(tmp_path, NAIVE)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    first = TrainConfig(attn=f"{path.name}:NaiveAttention", data="data", out="run", preset="tiny", max_iters=5,
                        device="cpu")
    stored = json.loads(json.dumps(first.resolved().to_dict()))
    assert stored["data"] == str((tmp_path / "data").resolve())  # absolute: valid from anywhere
    monkeypatch.chdir(tmp_path / "sub")
    again = TrainConfig(attn=f"../{path.name}:NaiveAttention", data="../data", out="../run", preset="tiny",
                        max_iters=5, device="cpu")
    assert curve_changing_differences(stored, again) == []
    other = write_plugin(tmp_path / "sub", NAIVE.replace("* spec.options", "* 2 * spec.options"), path.name)
    moved = TrainConfig(attn=f"{other.name}:NaiveAttention", data="../data", out="../run", preset="tiny",
                        max_iters=5, device="cpu")
    assert [d.split(":")[0] for d in curve_changing_differences(stored, moved)] == ["attn_code_hash"]


def test_the_report_reads_roles_from_the_run_folder() -> None:
    def run(attn: str, labels: dict) -> Run:
        return Run(Path(f"/x/{attn}-s0"), {"attn": attn, "labels": labels}, [], None, "finished")

    assert run("ra-looks-like-ra", {"attn_role": "candidate"}).attn_role == "candidate"
    assert run("ra-retired", {}).attn_role == "ra"  # older folders: the naming convention
    assert run("ra-norec", {}).attn_role == "control"  # older folders: the registry's role
    assert run("x/d.py:Diff", {}).attn_role == "candidate"  # never imported by the report


def test_check_passes_a_conforming_plugin_and_fails_a_peeking_one(tmp_path: Path, capsys) -> None:
    assert main(["check", f"{write_plugin(tmp_path, NAIVE)}:NaiveAttention", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PASS  paired starts" in out and "SKIP  CUDA graph" in out and "FAIL" not in out
    assert main(["check", f"{write_plugin(tmp_path, PEEKING, 'peek.py')}:PeekingAttention", "--device", "cpu"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("FAIL  causality") and "moved by" in line for line in lines)
    assert lines[-1].endswith("1 check(s) failed (causality)")


@pytest.mark.parametrize("attn, opt, says", [("ra-budget", "k=2", "k must be in (0, 1]"),
                                              ("ra-sparse", "p=-1", "p must be in (0, 1]"),
                                              ("ra-amortized", "every=0", "every must be >= 1")])
def test_check_refuses_an_option_value_in_one_line_as_train_does(attn: str, opt: str, says: str, capsys) -> None:
    assert main(["check", attn, "--attn-opt", opt, "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "FAIL" not in captured.out and "check(s) failed" not in captured.out
    assert captured.err.strip().startswith("rabench: error:") and says in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_a_malformed_list_option_names_the_syntax() -> None:
    with pytest.raises(RabenchError, match=r"layers='abc': expected a comma-separated list of integers, e.g. layers=0,3,5"):
        attention.resolve_options("ra-layers", {"layers": "abc"})


@pytest.mark.parametrize("ref", [DIFF, SIGMOID])
def test_examples_pass_check_with_their_float64_reference(ref: str, capsys) -> None:
    assert main(["check", ref, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PASS  float64 reference" in out and "PASS  torch.compile" in out


def test_the_reference_check_catches_a_core_that_departs_from_its_math(tmp_path: Path, monkeypatch) -> None:
    from rabench.conformance import run_checks

    cls = attention.entry(SIGMOID).cls
    monkeypatch.setattr(cls, "reference", lambda self, q, k, v, x: cls.forward(self, q, k, v * 1.01, x))
    result = {r.name: r for r in run_checks(SIGMOID, None, torch.device("cpu"))}["float64 reference"]
    assert result.status == "FAIL" and "differs from the float64 reference" in result.detail


def test_the_fold_check_passes_the_folding_cores_and_catches_an_attend_that_departs(monkeypatch) -> None:
    """rabench check: the model runs std-gated and ra-norec as attend on a projection with their
    query map folded in; a forward that is not attend after the map fails the check."""
    from rabench.attention.common import apply_query_affine
    from rabench.conformance import run_checks

    def fold(ref: str, options: dict | None = None):
        return {r.name: r for r in run_checks(ref, options, torch.device("cpu"))}["query fold"]

    assert fold("std-gated").status == "PASS" and fold("ra-norec").status == "PASS"
    assert fold("sdpa").status == "SKIP" and fold("ra-norec", {"backend": "torch"}).status == "SKIP"
    cls = attention.entry("ra-norec").cls
    attend = cls.attend  # a forward that drops the map's shift
    monkeypatch.setattr(cls, "forward", lambda self, q, k, v, x: attend(
        self, apply_query_affine(q, self.query_affine()[0], None), k, v, x))
    result = fold("ra-norec")
    assert result.status == "FAIL" and "is not the core's forward" in result.detail


OPEN_CODED = {"open", "ra-open", "ra-sparse"}  # their forward is the definition's open-coded form


@pytest.mark.parametrize("name", sorted(set(attention.names()) - OPEN_CODED))
def test_every_builtin_route_matches_its_float64_definition_in_rabench_check(name: str) -> None:
    """Each built-in that computes its logits another way (SDPA, the kernel, a fold, a row gate on
    an operand) declares its definition open-coded, and `rabench check` compares against it. A core
    that needs the GPU is checked on it where there is one, as `rabench check` does: the Triton
    interpreter, which runs the kernel on CPU tensors, is on only where there is no GPU."""
    from rabench.conformance import CheckContext, check_reference

    on_gpu = attention.entry(name).needs_gpu and torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    status, detail = check_reference(CheckContext(name, None, device))
    assert status == "PASS", detail


def test_the_reference_check_catches_a_route_that_departs_from_its_definition(monkeypatch) -> None:
    """ra-local whose kernel band is one wider than its definition's: the check fails."""
    from rabench.attention.kernel_route import run_canonical_ra
    from rabench.conformance import CheckContext, check_reference

    cls = attention.entry("ra-local").cls
    monkeypatch.setattr(cls, "forward", lambda self, q, k, v, x: run_canonical_ra(
        q, k, v, self.gates, self.scale, band=self.window + 1, backend=self.backend))
    status, detail = check_reference(CheckContext("ra-local", {"window": 4}, torch.device("cpu")))
    assert status == "FAIL" and "differs from the float64 reference" in detail


def test_the_compile_check_allows_an_eager_first_call_and_fails_a_break_in_every_call(monkeypatch) -> None:
    """rabench check's torch.compile line runs one eager forward first, as training's warm-up does:
    ra-amortized, which allocates its buffer on its first call, passes; a core that breaks the
    graph in every forward fails."""
    from rabench.conformance import run_checks

    def compile_check(ref: str):
        return {r.name: r for r in run_checks(ref, None, torch.device("cpu"))}["torch.compile"]

    assert compile_check("ra-amortized").status == "PASS"
    cls = attention.entry("sdpa").cls
    forward = cls.forward

    def breaking(self, q, k, v, x):  # work on both sides of the break, so each side is a graph
        q = q * 1.0
        torch._dynamo.graph_break()
        return forward(self, q, k, v, x) + 0.0

    monkeypatch.setattr(cls, "forward", breaking)
    result = compile_check("sdpa")
    assert result.status == "FAIL" and "graph break" in result.detail


def test_a_core_that_carries_position_drops_the_absolute_position_embedding(tmp_path: Path) -> None:
    source = NAIVE.replace('default_options = {"boost": 1.0}', 'default_options = {"boost": 1.0}\n'
                           '    uses_position_embedding = False')
    ref = f"{write_plugin(tmp_path, source, 'nopos.py')}:NaiveAttention"
    model = build_model("tiny", ref, None, seed=0)
    assert not model.use_wpe and not model.wpe.weight.requires_grad
    sdpa = shared_params(build_model("tiny", "sdpa", None, seed=0))
    assert all(torch.equal(p, sdpa[n]) for n, p in shared_params(model).items())  # still drawn: paired
    idx = torch.randint(0, 100, (1, 8))
    before = model(idx)[0]
    with torch.no_grad():
        model.wpe.weight.add_(1.0)
    assert torch.equal(before, model(idx)[0])


def test_a_stored_calibration_of_other_code_is_refused(tmp_path: Path) -> None:
    from rabench.fileio import json_form
    from rabench.suite.calibrate import card_name
    from rabench.suite.plan import SuitePlan, resolve_plan
    from rabench.suite.ratios import calibration_request, stored_calibration

    path = write_plugin(tmp_path, NAIVE)
    ref = f"{path}:NaiveAttention"
    plan = resolve_plan(SuitePlan(attns=["sdpa", ref], preset="tiny", max_iters=10))
    req = calibration_request(plan, plan.attns, str(tmp_path))
    configs = {a: {"ratio": 1.0, "attn_options": json_form(req.options[a]), "attn_code_hash": attention.entry(a).code_hash}
               for a in plan.attns}
    from rabench import source_hash
    from rabench.machine import machine_id

    record = {"card": card_name(torch.device("cpu")), "machine_id": machine_id(), "source_hash": source_hash(),
              "settings": json_form(req.settings()), "configs": configs}
    (tmp_path / "calibration.json").write_text(json.dumps(record))
    stored, missing = stored_calibration(plan, tmp_path, str(tmp_path), torch.device("cpu"), False, say=lambda *_: None)
    assert stored is not None and missing == []
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(RabenchError, match=r"attn_code_hash\["):
        stored_calibration(plan, tmp_path, str(tmp_path), torch.device("cpu"), False, say=lambda *_: None)


def test_the_cpu_determinism_check_skips_a_gpu_only_core_on_a_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # without the interpreter a needs_gpu core cannot run on the CPU: SKIP, not a FAIL that fails `check`
    from rabench.conformance import CheckContext, check_determinism

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    status, why = check_determinism(CheckContext("ra-triton", {}, torch.device("cpu")))
    assert status == "SKIP" and "CUDA GPU" in why
