"""Analysis: the paper's resolution arithmetic (and, later, activation and statistical tools)."""
