"""Analysis of trained runs: comparison statistics, modularity diagnostics, figures and the reproduction tables.

:mod:`~agents.analysis.compare` (many runs: tables, plots, bootstrap statistics),
:mod:`~agents.analysis.activations` (which RIM units are active, as numbers),
:mod:`~agents.analysis.modularity` (those statistics over a sweep, averaged over seeds),
:mod:`~agents.analysis.visualize` (activation GIFs and heatmaps) and
:mod:`~agents.analysis.reproduce` (the committed RIM vs LSTM tables, built on compare and
modularity, and the RIMs paper's copying task).

Layering: modules here import :mod:`agents.experiment` and the algorithms, never :mod:`agents.cli`
(``tests/test_layering.py``).
"""
