"""One module per `rabench` subcommand: each defines HELP, add_arguments(parser) and run(args).

The CLI (`rabench.cli`) only assembles them; the work itself lives in training, analysis,
bench and data, which never import from here.
"""

from rabench.commands import attentions, bench, check, demo, prepare, report, suite, train

COMMANDS = {"prepare": prepare, "train": train, "suite": suite, "report": report, "bench": bench, "demo": demo,
            "attentions": attentions, "check": check}

__all__ = ["COMMANDS"]
