"""The reproduction of the RIM vs LSTM comparison (issue 13): one command per table.

Modules: :mod:`~agents.analysis.reproduce.tables` (the presets in ``configs/sweep/reproduce_<table>.yaml`` and
one ``scripts/train.py`` sweep per model), :mod:`~agents.analysis.reproduce.runner` (a table end to end),
:mod:`~agents.analysis.reproduce.summary` (numbers, verdicts and modularity as data),
:mod:`~agents.analysis.reproduce.report` (the committed folder of a split table),
:mod:`~agents.analysis.reproduce.tune` (the learning-rate table), :mod:`~agents.analysis.reproduce.meta` (commit,
date, machine, command), :mod:`~agents.analysis.reproduce.copying` (the copying table's per-seed record) and
:mod:`~agents.analysis.reproduce.copying_report` (its committed folder). The copying task's runs train in
:mod:`agents.experiment.copying`.
"""
