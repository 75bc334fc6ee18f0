"""One training run from a composed config: validate, train, evaluate OOD, write the run folder.

``train(cfg, run_dir) -> metrics`` is a plain function (``scripts/train.py`` wraps it with
``@hydra.main``), so tests call it directly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from agents.a2c import RecurrentA2C
from agents.cores import CORES
from agents.evaluation import OODEvalCallback, evaluate_split, format_table, write_results
from agents.ppo import RecurrentPPO
from envs.levels import make_condition_vec_env
from envs.splits import Split, split_from_dict

log = logging.getLogger(__name__)
ALGORITHMS = {"ppo": RecurrentPPO, "a2c": RecurrentA2C}
_RIM_KEYS = (
    "num_units", "k", "num_input_heads", "input_key_size", "input_value_size",
    "num_comm_heads", "comm_key_size", "comm_value_size", "attention_dropout",
)  # fmt: skip


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key, expected and given."""


def validate(cfg: DictConfig) -> Split:
    """Check the whole config before anything is built; return the split.

    :raises ConfigError: on the first problem found.
    """
    for key in ("total_frames", "n_envs", "eval.every_frames", "eval.episodes", "eval.final_episodes"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    if cfg.model.core not in CORES:
        raise ConfigError(f"model.core must be one of {list(CORES)}, got {cfg.model.core!r}")
    if cfg.agent.name not in ALGORITHMS:
        raise ConfigError(f"agent.name must be one of {sorted(ALGORITHMS)}, got {cfg.agent.name!r}")
    if cfg.model.core.startswith("rim"):
        units, k, hidden = cfg.model.num_units, cfg.model.k, cfg.model.hidden_size
        if not 1 <= k <= units:
            raise ConfigError(f"model.k must be in [1, model.num_units] = [1, {units}], got {k}")
        if hidden % units:
            raise ConfigError(f"model.hidden_size must be divisible by model.num_units={units}, got {hidden}")
    try:
        return split_from_dict(OmegaConf.to_container(cfg.env, resolve=True), source="env")
    except ValueError as error:
        raise ConfigError(str(error)) from error


def build_model(cfg: DictConfig, env: Any) -> RecurrentPPO:
    """The algorithm of ``cfg.agent`` with the core of ``cfg.model`` on ``env``."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    core = model_cfg.pop("core")
    core_kwargs = {
        k: v for k, v in model_cfg.items() if k == "hidden_size" or (core.startswith("rim") and k in _RIM_KEYS)
    }
    agent_cfg = OmegaConf.to_container(cfg.agent, resolve=True)
    algo = ALGORITHMS[agent_cfg.pop("name")]
    return algo(
        "RecurrentPolicy",
        env,
        policy_kwargs=dict(core=core, core_kwargs=core_kwargs),
        seed=cfg.seed,
        device=cfg.device,
        torch_threads=cfg.torch_threads,
        **agent_cfg,
    )


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Validate, train on the split's train levels, evaluate every test condition, save.

    Writes ``config.yaml`` (resolved), ``model.zip`` (written to a temporary name, then
    renamed), ``ood_curves.{json,csv}`` and ``eval.{json,csv}`` into ``run_dir``.

    :returns: ``{condition: mean deterministic return}`` of the final evaluation.
    :raises ConfigError: before anything is written, if the config cannot run.
    """
    split = validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(cfg.seed)
    env = make_condition_vec_env(split.train, cfg.n_envs, seed=cfg.seed)
    model = build_model(cfg, env)
    callback = OODEvalCallback(split, cfg.eval.every_frames, cfg.eval.episodes)
    model.learn(cfg.total_frames, callback=callback)
    tmp = run_dir / "model.tmp.zip"
    model.save(tmp)
    tmp.replace(run_dir / "model.zip")
    if callback.history:
        write_results(callback.history, run_dir, stem="ood_curves")
    rows = evaluate_split(model, split, episodes=cfg.eval.final_episodes, modes=["deterministic"], seed=cfg.seed)
    write_results(rows, run_dir, stem="eval")
    log.info("final evaluation\n%s", format_table(rows))
    env.close()
    metrics = {r["condition"]: r["mean_return"] for r in rows}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
