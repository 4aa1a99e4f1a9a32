"""What every layer shares: errors and exit codes, atomic files, TOML settings, run info, the
command-line helper, the run-directory schema and its vocabulary.

It imports none of the other packages (bologan, scaling, energy, analysis, launch), and nothing
heavy at import time.
"""
