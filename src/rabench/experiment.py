"""What the experiment compares, by name: the one place the suite, the analysis and the bench
read the baseline, the controls and the default attention lists from.

Pure data: no imports from the package, so any module may read it without a cycle.
"""

from __future__ import annotations

# Every candidate is judged against the fused standard attention (PyTorch's SDPA).
BASELINE = "sdpa"
# The controls RA is also judged against in the time design: std-gated learns a temperature
# (RA's gates without the reciprocal term); ra-norec is RA with w_rec held at 0, so the two
# differ in the discoverability bias alone and RA minus ra-norec isolates reciprocity.
CONTROL = "std-gated"
NOREC = "ra-norec"
# Open-coded RA is judged against open-coded standard attention: the same unfused code path,
# so the gap is RA's and not the kernel's. Candidate -> its twin.
OPEN_TWINS = {"ra-open": "open"}

# The suite's default plan: the plan's four tests (sdpa, open, ra-open, ra-triton) and the two
# controls.
PLAN_ATTNS = [BASELINE, "open", "ra-open", "ra-triton", CONTROL, NOREC]
# `rabench demo`'s attentions: the baseline, RA as defined (open-coded: the one RA a CPU runs) and
# RA without its reciprocal term.
DEMO_ATTNS = [BASELINE, "ra-open", NOREC]
# `rabench bench`'s default rows (the registered RA variants are added after them).
BENCH_ATTNS = [BASELINE, "open", CONTROL, "ra-open", "ra-folded", "ra-triton"]
