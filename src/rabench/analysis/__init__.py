"""Turn a folder of training runs into a report that answers the benchmark plan.

    from rabench.analysis import write_report
    md, html = write_report("runs/suite-1h")
    print(summarize("runs/suite-1h"))   # the verdicts in a few lines, for a terminal
"""

from rabench.analysis.report import summarize, write_report

__all__ = ["summarize", "write_report"]
