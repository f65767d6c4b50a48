"""Reproducing a paper's table: the tables as data (``experiments/tables/*.json``), their cells as command lines of
the entry scripts, running them (skipping finished cells, resuming interrupted ones, several students per process),
summaries next to the paper's numbers, and plots.

Layer: above ``assembly`` (it parses each cell's command with the entry scripts' own parsers to know its run
folders); nothing below imports it. ``scripts/reproduce_table.py`` and ``scripts/plot_runs.py`` are its entry points.
"""
