"""Pairing of runs by seed: the candidate's and the baseline's run of one seed, on one card.

Runs are paired by seed only within one batch (suite folder) and one card (gpu + host), and
within one machine where the runs record one (`machine_id`), except runs to a plateau: they
outlive a device lease and resume wherever one is lent, so a seed's two runs seldom start on one
machine; they pair across machines (suite.folder.pairs_across_machines) and `machine_note`
says so. The criteria and the break-even
from run lengths both judge these pairs; a module of their own lets lengths.py sit below
criteria.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rabench.analysis.runs import BASE_ROLE, ISO_ITER, ConfigGroup, Run
from rabench.suite.folder import pairs_across_machines

N_ROLES = (BASE_ROLE, ISO_ITER)  # the runs of N iterations: the baseline's and each candidate's iso-iteration run


@dataclass
class Pair:
    """One seed of the candidate and of the baseline, from one batch on one card."""

    seed: int
    batch: str
    card: str
    cand: Run
    base: Run

    @property
    def tag(self) -> str:
        return f"seed {self.seed} ({self.batch})" if self.batch not in (".", "") else f"seed {self.seed}"

    @property
    def same_machine(self) -> bool:
        """Both runs known to share one machine: their machine identities agree (see Run.machine)."""
        return self.cand.machine is not None and self.cand.machine == self.base.machine


def pair_runs(cands: list[Run], bases: list[Run]) -> tuple[list[Pair], list[str]]:
    """Pairs by seed within one (batch, card) and, where both runs record a machine_id, within
    one machine; notes for every run left out and why."""
    notes: list[str] = []
    index: dict[tuple[str, str, int], list[Run]] = {}
    for r in bases:
        if r.judgeable:
            index.setdefault((r.batch, r.card, r.seed), []).append(r)
    pairs = []
    for c in cands:
        if not c.judgeable:
            continue
        base = _partner(c, index.get((c.batch, c.card, c.seed), []))
        if base is not None:
            pairs.append(Pair(c.seed, c.batch, c.card, c, base))
        else:
            notes.append(f"{c.where}: no finished baseline run with seed {c.seed} in the same batch on the same card "
                         "and machine; left out")
    for r in cands + bases:
        if not r.judgeable:
            notes.append(f"{r.where}: not judged, {r.why_not_judged}")
    pairs.sort(key=lambda p: (p.batch, p.card, p.seed))
    return pairs, notes


def _partner(cand: Run, bases: list[Run]) -> Run | None:
    """The baseline run to pair with: one on the candidate's machine where that is recorded;
    a run recording another machine never pairs (runs to a plateau excepted: see the module
    docstring); runs that record none pair as before."""
    if cand.machine_id is None:
        return bases[0] if bases else None
    same = [b for b in bases if b.machine_id == cand.machine_id]
    unknown = [b for b in bases if b.machine_id is None]
    elsewhere = [b for b in bases if b.role == cand.role] if pairs_across_machines(cand.role) else []
    return (same or unknown or elsewhere or [None])[0]


def machine_note(pairs: list[Pair]) -> str | None:
    """How many seed pairs cross machines or cannot be shown to share one (old folders record no
    machine identity; their proxy, batch + GPU UUID, names a card, not a node)."""
    crossing = [p for p in pairs if not p.same_machine]
    if not crossing:
        return None
    unknown = sum(p.cand.machine is None or p.base.machine is None for p in crossing)
    return (f"{len(crossing)} of {len(pairs)} pairs cross machines or cannot be shown to share one "
            f"({unknown} with a run that records no machine identity or GPU UUID; the others on different "
            "machines or cards): their gaps hold the card-to-card variation too")


def runs_of(group: ConfigGroup | None, roles: tuple[str, ...]) -> list[Run]:
    return [r for r in group.runs if r.role in roles] if group else []
