"""Turn a folder of training runs into a report that answers the benchmark plan.

    from rabench.analysis import write_report
    md, html = write_report("runs/suite-1h")
"""

from rabench.analysis.plateau import PlateauRule
from rabench.analysis.report import write_report

__all__ = ["PlateauRule", "write_report"]
