"""Readers of the sources: problem files (the `problems` option), PRM800K's download and Math-Shepherd's conversion."""
