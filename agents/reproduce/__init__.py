"""The reproduction of the RIM vs LSTM comparison (issue 13): one command per table.

Modules: :mod:`~agents.reproduce.tables` (the presets in ``configs/sweep/reproduce_<table>.yaml`` and
one ``scripts/train.py`` sweep per model), :mod:`~agents.reproduce.runner` (a table end to end),
:mod:`~agents.reproduce.summary` (numbers, verdicts and modularity as data),
:mod:`~agents.reproduce.report` (the committed folder of a split table),
:mod:`~agents.reproduce.tune` (the learning-rate table), :mod:`~agents.reproduce.meta` (commit,
date, machine, command) and :mod:`~agents.reproduce.copying` (the RIMs paper's copying task).
"""
