"""The typed config: every key's check names the key, expected and given; presets compose as before; --info."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.experiment.config import ConfigError, typed_config
from agents.experiment.config.describe import SECTIONS, describe
from agents.experiment.config.schema import composition_error

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _plain(overrides: list[str] = (), **changes: Any) -> dict[str, Any]:
    """The composed config as plain Python, with ``changes`` (dotted keys) set."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        data = OmegaConf.to_container(compose(config_name="train", overrides=list(overrides)), resolve=True)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value
    return data


BAD = [
    ({"seed": -1}, [], r"seed must be an integer >= 0, got -1"),
    ({"total_frames": 0}, [], r"total_frames must be a positive integer, got 0"),
    ({"n_envs": 0}, [], r"n_envs must be a positive integer, got 0"),
    ({"torch_threads": 0}, [], r"torch_threads must be a positive integer, got 0"),
    ({"device": "gpu"}, [], r"device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
    ({"progress_bar": "maybe"}, [], r"progress_bar must be of type boolean, got 'maybe'"),
    ({"resume": 3}, [], r"resume must be true, false or a run folder, got 3"),
    ({"bogus": 1}, [], r"bogus is not a key of the top level; valid keys: \['agent', 'checkpoint'"),
    ({"checkpoint.every_frames": 0}, [], r"checkpoint.every_frames must be a positive integer, got 0"),
    ({"eval.every_frames": 0}, [], r"eval.every_frames must be a positive integer, got 0"),
    ({"eval.episodes": -2}, [], r"eval.episodes must be a positive integer, got -2"),
    ({"eval.final_episodes": 0}, [], r"eval.final_episodes must be a positive integer, got 0"),
    ({"eval.gif_max_steps": 0}, [], r"eval.gif_max_steps must be a positive integer, got 0"),
    ({"eval.gifs": "maybe"}, [], r"eval.gifs must be of type boolean, got 'maybe'"),
    ({"eval.conditions": "iid"}, [], r"eval.conditions must be a list, got a (str|single value)"),
    ({"eval.conditions": []}, [], r"eval.conditions must be null or a non-empty list of condition names, got \[\]"),
    ({"eval.conditions": ["doorkey_9x9"]}, [], r"eval.conditions must name conditions of split 'doorkey'"),
    ({"model.core": "transformer"}, ["model=lstm"], r"model.core must be one of \['lstm', 'gru', 'rim', 'rim_gru'\]"),
    ({"model.core": "transformer"}, [], r"model.core must be one of \['lstm', 'gru', 'rim', 'rim_gru'\]"),
    ({"model.core": "lstm"}, [], r"model.num_units is not a key of model with model.core='lstm'; valid keys: \['core'"),
    ({"model.hidden_size": 0}, ["model=lstm"], r"model.hidden_size must be a positive integer, got 0"),
    ({"model.num_units": 0}, [], r"model.num_units must be a positive integer, got 0"),
    ({"model.k": 5}, [], r"model.k must be in \[1, model.num_units\] = \[1, 4\], got 5"),
    ({"model.k": "abc"}, [], r"model.k must be of type integer, got 'abc'"),
    ({"model.hidden_size": 130}, [], r"model.hidden_size must be divisible by model.num_units=4, got 130"),
    ({"model.num_input_heads": 0}, [], r"model.num_input_heads must be a positive integer, got 0"),
    ({"model.input_key_size": 0}, [], r"model.input_key_size must be a positive integer, got 0"),
    ({"model.input_value_size": 0}, [], r"model.input_value_size must be a positive integer, got 0"),
    ({"model.num_comm_heads": 0}, [], r"model.num_comm_heads must be a positive integer, got 0"),
    ({"model.comm_key_size": 0}, [], r"model.comm_key_size must be a positive integer, got 0"),
    ({"model.comm_value_size": 0}, [], r"model.comm_value_size must be a positive integer, got 0"),
    ({"model.attention_dropout": 1.0}, [], r"model.attention_dropout must be in \[0.0, 1.0\), got 1.0"),
    ({"model.communication_update": "sum"}, [], r"model.communication_update must be one of \['bounded', 'residual'\]"),
    ({"model.num_layers": 0}, [], r"model.num_layers must be a positive integer, got 0"),
    ({"model.top_down": True}, [], r"model.top_down needs model.num_layers >= 2, got None"),
    ({"model.top_down": "sometimes"}, ["model=brims"], r"model.top_down must be of type boolean, got 'sometimes'"),
    ({"model.communication": "broadcast"}, [], r"model.communication must be one of \['pairwise', 'workspace'\]"),
    (
        {"model.selection": "top_k"},
        [],
        r"model.selection must be one of \['null_attention', 'input_score'\], got 'top_k'",
    ),
    ({"model.num_slots": 0}, ["model=rim_sw"], r"model.num_slots must be a positive integer, got 0"),
    ({"model.slot_size": 0}, ["model=rim_sw"], r"model.slot_size must be a positive integer, got 0"),
    ({"model.write_k": 4}, ["model=rim_sw"], r"model.write_k must be in \[1, model.k\] = \[1, 3\], got 4"),
    ({"model.num_schemata": 5}, ["model=scoff"], r"model.num_schemata must be in \[1, model.num_units\] = \[1, 4\]"),
    ({"model.schema_key_size": 0}, ["model=scoff"], r"model.schema_key_size must be a positive integer, got 0"),
    (
        {"model.num_units": 3},
        ["model=lstm"],
        r"model.num_units is not a key of model with model.core=.lstm.; valid keys: \[.core., .hidden_size., .name.\]",
    ),
    ({"agent.name": "sac"}, [], r"agent.name must be one of \['ppo', 'ppo_meta', 'a2c', 'a2c_meta'\], got 'sac'"),
    ({"agent.name": "a2c"}, [], r"agent.batch_size is not a key of agent with agent.name='a2c'; valid keys"),
    ({"agent.lerning_rate": 0.1}, [], r"agent.lerning_rate is not a key of agent; valid keys: \['batch_size'"),
    ({"agent.n_steps": 0}, [], r"agent.n_steps must be a positive integer, got 0"),
    ({"agent.batch_size": 0}, [], r"agent.batch_size must be a positive integer, got 0"),
    # issue 15: a minibatch above the rollout was only warned about (PPO silently used the rollout)
    ({"agent.batch_size": 2048}, [], r"agent.batch_size must be in \[1, agent.n_steps \* n_envs\] = \[1, 128 \* 8\]"),
    (
        {"n_envs": 1},
        [],
        r"agent.batch_size must be in .* = \[1, 128\] \(a minibatch is drawn from one rollout\), got 256",
    ),
    ({"agent.n_steps": 16}, [], r"agent.batch_size must be in .* = \[1, 16 \* 8\] = \[1, 128\] .*got 256"),
    ({"agent.n_epochs": 0}, [], r"agent.n_epochs must be a positive integer, got 0"),
    ({"agent.learning_rate": 0.0}, [], r"agent.learning_rate must be a positive number, got 0.0"),
    ({"agent.learning_rate": -1e-3}, ["agent=a2c"], r"agent.learning_rate must be a positive number, got -0.001"),
    ({"agent.gamma": 1.5}, [], r"agent.gamma must be in \[0.0, 1.0\], got 1.5"),
    ({"agent.gae_lambda": -0.1}, [], r"agent.gae_lambda must be in \[0.0, 1.0\], got -0.1"),
    ({"agent.clip_range": 0.0}, [], r"agent.clip_range must be in \(0.0, 1.0\], got 0.0"),
    ({"agent.ent_coef": -0.01}, [], r"agent.ent_coef must be a number >= 0, got -0.01"),
    ({"agent.vf_coef": -1.0}, [], r"agent.vf_coef must be a number >= 0, got -1.0"),
    ({"agent.max_grad_norm": 0.0}, [], r"agent.max_grad_norm must be a positive number, got 0.0"),
    ({"agent.max_seq_len": 0}, [], r"agent.max_seq_len must be a positive integer, got 0"),
    ({"agent.batch_size": 8}, ["agent=a2c"], r"agent.batch_size is not a key of agent"),
    ({"agent.fast_slow": None}, ["agent=ppo_meta"], r"agent.fast_slow must be set for agent.name='ppo_meta'"),
    ({"agent.fast_slow.outer_horizon": 0}, ["agent=ppo_meta"], r"agent.fast_slow.outer_horizon must be a positive"),
    ({"agent.fast_slow.inner_learning_rate": -1.0}, ["agent=ppo_meta"], r"agent.fast_slow.inner_learning_rate must"),
    ({"agent.fast_slow.outer_learning_rate": 0.0}, ["agent=ppo_meta"], r"agent.fast_slow.outer_learning_rate must"),
    ({"agent.fast_slow.inner_batch_size": 0}, ["agent=ppo_meta"], r"agent.fast_slow.inner_batch_size must be a"),
    (
        {"agent.fast_slow.inner_batch_size": 1025},
        ["agent=ppo_meta"],
        r"agent.fast_slow.inner_batch_size must be in \[1, agent.n_steps \* n_envs\] = .* = \[1, 1024\].*got 1025",
    ),
    ({"agent.fast_slow.inner_batch_size": 8}, ["agent=a2c_meta"], r"agent.fast_slow.inner_batch_size must be null"),
    ({"agent.fast_slow.outer_horzon": 2}, ["agent=ppo_meta"], r"agent.fast_slow.outer_horzon is not a key"),
    ({}, ["agent=ppo_meta", "model=lstm"], r"agent.fast_slow needs a RIM-family model.core"),
    ({"env.train.env_id": "MiniGrid-DoorKey-7x7-v0"}, [], r"env.train.env_id must be an environment id registered"),
    ({"env.test.doorkey_6x6.env_id": "DoorKey6"}, [], r"env.test.doorkey_6x6.env_id must be an environment id"),
    ({"env.train.env_id": "CartPole-v1"}, [], r"env.train.env_id must make a MiniGrid environment with image obs"),
    ({"env.train.seeds.count": 0}, [], r"env.train.seeds.count must be a positive integer, got 0"),
    ({"env.train.seeds.start": -1}, [], r"env.train.seeds.start must be an integer >= 0, got -1"),
    ({"env.test_seeds.count": 0}, [], r"env.test_seeds.count must be a positive integer, got 0"),
    ({"env.test_seeds.start": -1}, [], r"env.test_seeds.start must be an integer >= 0, got -1"),
    ({"env.test_seeds.start": 5}, [], r"env.test_seeds must not overlap .*test seeds \[5, 10005\) overlap train seeds"),
    ({"env.train.seeds.start": 999999}, [], r"env.test_seeds must not overlap env.train.seeds \[999999, 1099999\)"),
    ({"env.perturbations": ["fog"]}, [], r"env.perturbations must be a list .*unknown perturbations \['fog'\]"),
    ({"env.test.doorkey_6x6.perturbation": "fog"}, [], r"env.test.doorkey_6x6.perturbation must be null or one of"),
    ({"env.name": ""}, [], r"env.name must be a non-empty name without '/' \(run folders use it\), got ''"),
    ({"env.name": "door/key"}, [], r"env.name must be a non-empty name without '/'.*got 'door/key'"),
    ({"env.test.iid": {"env_id": "MiniGrid-DoorKey-5x5-v0"}}, [], r"env.test.<name> must not be one of the added"),
    # issue 15: env_kwargs failed in gym.make after the run folder was made (or at the final evaluation)
    ({"env.train.env_kwargs": {"bogus": 1}}, [], r"env.train.env_kwargs \{'bogus': 1\} must be arguments that make"),
    ({"env.train.env_kwargs": {"size": -1}}, [], r"env.train.env_kwargs \{'size': -1\} must be .*AssertionError"),
    ({"env.train.env_kwargs": "size=5"}, [], r"env.train.env_kwargs must be a mapping, got a (str|single value)"),
    ({"env.test.doorkey_8x8.env_kwargs": {"size": 2}}, [], r"env.test.doorkey_8x8.env_kwargs \{'size': 2\} must be"),
    (
        {"env.train.env_kwargs": {"agent_view_size": 5}},
        [],
        r"env.test.doorkey_6x6 must have the training environment's \(image shape, action space\) \(\(5, 5, 3\)",
    ),
    ({"logger.mode": "ofline"}, [], r"logger.mode must be one of \['offline', 'online', 'disabled'\], got 'ofline'"),
    ({"logger.init_timeout": 0}, [], r"logger.init_timeout must be a positive number, got 0"),
    ({"logger.name": "tensorboard"}, [], r"logger.name must be one of \['none', 'wandb'\], got 'tensorboard'"),
    ({"logger.project": ""}, [], r"logger.project must be a non-empty W&B project name, got ''"),
    ({"logger.tags": "fast"}, [], r"logger.tags must be a list, got a (str|single value)"),
    ({"logger.entity": ""}, [], r"logger.entity must be null or a non-empty name, got ''"),
    ({"logger.entity": ["me"]}, [], r"logger.entity must be of type string, got a list"),
    ({"logger.group": " "}, [], r"logger.group must be null or a non-empty name, got ' '"),
    ({"logger.group": {"a": 1}}, [], r"logger.group must be of type string, got a mapping"),
    (
        {"logger.mode": "offline"},
        ["logger=none"],
        r"logger.mode is not a key of logger with logger.name='none'; valid keys: \['name'\]",
    ),
]


@pytest.mark.parametrize(
    ("changes", "overrides", "message"),
    BAD,
    ids=[f"{i}-{next(iter(c), 'relation')}" for i, (c, _, _) in enumerate(BAD)],
)
def test_every_key_rejects_a_bad_value_naming_it(changes: dict[str, Any], overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        typed_config(_plain(overrides, **changes))


COMPOSITION = [
    (["sed=3"], r"sed is not a key of the top level; valid keys: \['agent', 'checkpoint', 'device'"),
    (["eval.every_frame=100"], r"eval.every_frame is not a key of eval \(eval group\); valid keys: \['conditions'"),
    (["model.num_unit=4"], r"model.num_unit is not a key of model \(model group\); valid keys: \['attention_dropout'"),
    (
        ["model=lstm", "model.num_units=4"],
        r"model.num_units is not a key of model .*valid keys: \['core', 'hidden_size', 'name'\]",
    ),
    (["model=transformer"], r"model=transformer is not an option of the config group model; options: \['brims', 'gru'"),
    (["agent=sac"], r"agent=sac is not an option of the config group agent; options: \['a2c', 'a2c_meta', 'ppo'"),
    (["model.k=abc"], r"model.k must be of type integer, got 'abc'"),
    # issue 15: the env group composes untyped; these ended in a traceback (exit 1)
    (["env.train.envid=X"], r"env.train.envid is not a key of env.train \(env group\); valid keys: \['env_id', 'env_"),
    (["env.test.doorkey_6x6.perturb=x"], r"env.test.doorkey_6x6.perturb is not a key of env.test.doorkey_6x6 "),
    (
        ["env.train.env_kwargs={size:5}"],
        r"env.train.env_kwargs is not set in this config file; add it with \+env.train",
    ),
    # and these named no key
    (["agent.fast_slow.outer_horizon=2"], r"agent.fast_slow.outer_horizon cannot be set while agent.fast_slow is off"),
    (["agent.fast_slow=true"], r"agent.fast_slow must be a mapping of FastSlowSchema's keys .* or null, got 'True'"),
]


@pytest.mark.parametrize(("overrides", "message"), COMPOSITION, ids=[" ".join(o) for o, _ in COMPOSITION])
def test_composition_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(Exception) as caught:  # Hydra's composition errors, of any type
        _plain(overrides)
    assert re.search(message, composition_error(caught.value)), composition_error(caught.value)


def test_fast_slow_set_whole_on_a_plain_agent_is_valid() -> None:
    assert typed_config(_plain(["agent.fast_slow={outer_horizon:2}"])).agent.fast_slow.outer_horizon == 2


@pytest.mark.parametrize(
    "overrides", [[], ["model=lstm"], ["model=brims"], ["model=rim_sw"], ["model=scoff"], ["model=meta_rim"],
                  ["agent=a2c_meta"], ["logger=none"], ["env=fourrooms"]],
)  # fmt: skip
def test_every_preset_is_valid_and_complete(overrides: list[str]) -> None:
    typed = typed_config(_plain(overrides))
    assert OmegaConf.missing_keys(typed) == set()


def test_meta_rim_keeps_its_fast_slow_and_plain_agents_have_none() -> None:
    assert typed_config(_plain(["model=meta_rim"])).agent.fast_slow.outer_horizon == 4
    assert typed_config(_plain(["agent=a2c_meta"])).agent.fast_slow.outer_horizon == 16
    assert typed_config(_plain()).agent.fast_slow is None


def test_info_lists_every_key_of_every_schema() -> None:
    text = describe()
    for _, prefix, schema in SECTIONS:
        for name in schema.__dataclass_fields__:
            assert f"{prefix}{name}" in text or name in ("checkpoint", "eval", "model", "agent", "env", "logger")
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
    result = subprocess.run([sys.executable, str(script), "--info"], capture_output=True, text=True, check=True)
    assert "agent.fast_slow.outer_horizon" in result.stdout and "model.write_k" in result.stdout


def test_info_names_every_model_and_agent_preset_under_its_schema() -> None:
    titles = " ".join(title for title, _, _ in SECTIONS)
    for group in ("model", "agent"):
        for path in (Path(__file__).resolve().parent.parent / "configs" / group).glob("*.yaml"):
            assert re.search(rf"{group}=[\w|]*\b{path.stem}\b", titles), path


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_generated_listing_not_hydras(flag: str) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
    result = subprocess.run([sys.executable, str(script), flag], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "agent.learning_rate" in result.stdout and "model.num_units" in result.stdout
    assert "Hydra's syntax" in result.stdout and "powered by Hydra" not in result.stdout
    assert "model                    " in result.stdout and "[rim]" in result.stdout  # groups, default marked
    assert "logger" in result.stdout and "[wandb]" in result.stdout
