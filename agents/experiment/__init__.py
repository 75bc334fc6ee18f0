"""The run lifecycle: one training run from a typed config to a run folder.

:mod:`~agents.experiment.run` (``train(cfg, run_dir) -> metrics``: validate, build, learn,
evaluate, write the run folder), :mod:`~agents.experiment.config` (the typed config dataclasses,
registered in Hydra's ConfigStore), :mod:`~agents.experiment.checkpoint` (save and resume),
:mod:`~agents.experiment.resume` (which state a run folder continues from),
:mod:`~agents.experiment.manifest` (verified writes of checkpoints and ``model.zip``, their checksums),
:mod:`~agents.experiment.recovery` (the newest checkpoint that verifies and loads),
:mod:`~agents.experiment.faults` (failures of the environment, which resume, apart from the config's or code's),
:mod:`~agents.experiment.interrupt` (SIGINT/SIGTERM -> checkpoint and stop),
:mod:`~agents.experiment.evaluation` (OOD evaluation on a split's test conditions),
:mod:`~agents.experiment.recording` (one episode: frames, actions, active units),
:mod:`~agents.experiment.metrics_log` and :mod:`~agents.experiment.wandb_logger` (logging),
:mod:`~agents.experiment.atomic` (atomic file writes), :mod:`~agents.experiment.run_folder`
(load a trained run folder back) and :mod:`~agents.experiment.copying` (one run of the RIMs paper's
copying task, the run behind ``scripts/copying.py``).

Layering: modules here import the algorithms (``agents.ppo``, ``agents.policies``, ...) and never
:mod:`agents.analysis` or :mod:`agents.cli` (``tests/test_layering.py``). Nothing is imported here,
so ``agents.experiment.atomic`` stays as light as it reads.
"""
