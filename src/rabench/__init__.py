"""rabench: does Reciprocal Attention beat standard attention per unit of wall-clock time?"""

__version__ = "0.1.0"
