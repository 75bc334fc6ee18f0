"""Fast and slow learning (Meta-RIMs): parameter groups, inner/outer schedule, save/load, resume, config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from agents import RecurrentA2C, RecurrentPPO
from agents.analysis.compare import group_runs, load_runs
from agents.experiment.run import ConfigError, TrainingInterruptedError, build_model, train, validate
from agents.fast_slow import FastSlowConfig
from envs import make_minigrid_vec_env
from envs.levels import make_condition_vec_env
from tests.test_run_lifecycle import _policy, _rows, _SignalAt

ROOT = Path(__file__).resolve().parent.parent
CORE = dict(hidden_size=16, num_units=4, k=2)
ATTENTION = (
    "weight_key", "bias_key", "weight_value", "bias_value", "weight_query", "bias_query",
    "weight_comm_qkv", "weight_comm_out",
)  # fmt: skip
TINY = [
    "env=empty", "total_frames=128", "n_envs=2", "eval.every_frames=64", "eval.episodes=1", "eval.final_episodes=2",
    "eval.gifs=false", "eval.conditions=[iid]", "agent.n_steps=16", "model.hidden_size=16",
    "checkpoint.every_frames=32", "progress_bar=false", "logger=none",
]  # fmt: skip


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _agent(algo: type[RecurrentPPO], core: str = "rim", **kwargs: object) -> RecurrentPPO:
    env = make_minigrid_vec_env("MiniGrid-Empty-5x5-v0", n_envs=2, seed=0)
    core_kwargs = CORE if core.startswith("rim") else dict(hidden_size=16)
    options = dict(n_steps=16, batch_size=16, n_epochs=2) if algo is RecurrentPPO else dict(n_steps=8)
    policy_kwargs = dict(core=core, core_kwargs={**core_kwargs, **kwargs.pop("core_kwargs", {})})
    return algo("RecurrentPolicy", env, policy_kwargs=policy_kwargs, seed=0, **options, **kwargs)


@pytest.mark.parametrize("core", ["rim", "rim_gru"])
def test_the_attention_parameters_are_slow_and_everything_else_fast(core: str) -> None:
    model = _agent(RecurrentPPO, core, fast_slow=True)
    assert model.slow_learner is not None
    slow = set(model.slow_learner.names)
    assert slow == {f"core.module.layers.0.{name}" for name in ATTENTION}
    fast_ids = {id(p) for p in model.policy.optimizer.param_groups[0]["params"]}
    fast = {name for name, p in model.policy.named_parameters() if id(p) in fast_ids}
    units = {f"core.module.layers.0.{name}" for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    assert units <= fast
    assert {name.split(".")[0] for name in fast} == {
        "features_extractor",
        "core",
        "mlp_extractor",
        "action_net",
        "value_net",
    }
    assert fast | slow == {name for name, _ in model.policy.named_parameters()} and not fast & slow
    assert [id(p) for p in model.slow_learner.optimizer.param_groups[0]["params"]] == [
        id(p) for p in model.slow_learner.params
    ]


def test_every_rim_layer_of_the_core_contributes_its_attention_parameters() -> None:
    model = _agent(RecurrentPPO, fast_slow=True, core_kwargs=dict(num_layers=2))
    assert model.slow_learner is not None
    assert set(model.slow_learner.names) == {f"core.module.layers.{i}.{n}" for i in (0, 1) for n in ATTENTION}


@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_inner_updates_leave_the_slow_group_and_the_outer_step_moves_it(algo: type[RecurrentPPO]) -> None:
    model = _agent(algo, fast_slow=dict(outer_horizon=2))
    learner = model.slow_learner
    assert learner is not None
    slow_before = [p.detach().clone() for p in learner.params]
    fast = model.policy.optimizer.param_groups[0]["params"]
    fast_before = [p.detach().clone() for p in fast]
    rollout = model.n_steps * model.n_envs
    model.learn(rollout)  # one rollout: inner loop, outer gradient summed, no slow step yet
    assert learner.rollouts == 1 and learner.steps == 0
    assert all(torch.equal(a, p) for a, p in zip(slow_before, learner.params, strict=True))
    assert all(p.grad is None for p in learner.params)  # the inner backward never reaches them
    assert any(not torch.equal(a, p) for a, p in zip(fast_before, fast, strict=True))
    assert any(total.abs().sum() > 0 for total in learner.grad_sum)
    model.learn(rollout, reset_num_timesteps=False)  # the horizon's second rollout: one slow step
    assert learner.rollouts == 0 and learner.steps == 1
    moved = [not torch.equal(a, p) for a, p in zip(slow_before, learner.params, strict=True)]
    by_name = dict(zip(learner.names, moved, strict=True))
    assert by_name["core.module.layers.0.weight_key"] and by_name["core.module.layers.0.weight_comm_qkv"]
    assert not by_name["core.module.layers.0.bias_key"]  # cancels in the softmax: an exact zero gradient


def test_inner_batch_size_and_learning_rates_reach_the_optimizers() -> None:
    config = FastSlowConfig(inner_learning_rate=1e-3, outer_learning_rate=2e-5, inner_batch_size=8)
    model = _agent(RecurrentPPO, fast_slow=config)
    assert model.slow_learner is not None
    assert model.policy.optimizer.param_groups[0]["lr"] == 1e-3
    assert model.slow_learner.optimizer.param_groups[0]["lr"] == 2e-5
    model.learn(model.n_steps * model.n_envs)  # 32 samples: 4 minibatches of 8 in each of 2 epochs
    first = model.policy.optimizer.param_groups[0]["params"][0]
    assert int(model.policy.optimizer.state[first]["step"]) == 8
    assert model.policy.optimizer.param_groups[0]["lr"] == 1e-3  # the fast group's schedule
    a2c = _agent(RecurrentA2C, fast_slow=dict(outer_horizon=3))
    assert isinstance(a2c.slow_learner.optimizer, torch.optim.RMSprop) and a2c.slow_learner.horizon == 3


@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_save_and_load_keep_both_optimizers_and_the_outer_sum(algo: type[RecurrentPPO], tmp_path: Path) -> None:
    model = _agent(algo, fast_slow=dict(outer_horizon=3))
    model.learn(4 * model.n_steps * model.n_envs)  # one slow step, then one rollout into the next sum
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip", env=model.get_env())
    assert loaded.fast_slow == model.fast_slow
    saved, got = model.slow_learner.state_dict(), loaded.slow_learner.state_dict()
    assert (got["rollouts"], got["steps"]) == (saved["rollouts"], saved["steps"]) == (1, 1)
    assert all(torch.equal(saved["grad_sum"][k], got["grad_sum"][k]) for k in saved["grad_sum"])
    for old, new in (
        (model.slow_learner.optimizer, loaded.slow_learner.optimizer),
        (model.policy.optimizer, loaded.policy.optimizer),
    ):
        a, b = old.state_dict(), new.state_dict()
        assert a["param_groups"] == b["param_groups"]
        assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])


@pytest.mark.parametrize("core", ["lstm", "gru"])
@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_plain_cores_are_refused_by_name(core: str, algo: type[RecurrentPPO]) -> None:
    with pytest.raises(ValueError, match=rf"fast_slow needs a RIM-family core .*; core '{core}' has none"):
        _agent(algo, core, fast_slow=True)


@pytest.mark.parametrize("agent", ["agent=ppo_meta", "agent=a2c_meta"])
def test_a_resumed_fast_slow_run_equals_the_uninterrupted_run(agent: str, tmp_path: Path) -> None:
    overrides = [*TINY, agent, "agent.fast_slow.outer_horizon=3"]  # the checkpoint falls mid-horizon
    if agent == "agent=ppo_meta":  # a minibatch is at most the rollout (2 envs x 16 steps)
        overrides += ["agent.batch_size=32", "agent.fast_slow.inner_batch_size=16"]
    reference = tmp_path / "reference"
    expected = train(_compose(overrides), reference)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError) as stop:
        train(_compose(overrides), run, callbacks=[_SignalAt(40)])
    assert stop.value.frames == 64
    assert train(_compose([*overrides, "resume=true"]), run) == expected
    want, got = _policy(reference), _policy(run)
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert _rows(run) == _rows(reference)
    assert any("train/outer_loss" in row for row in _rows(run))


@pytest.mark.parametrize(
    "overrides",
    [["model=meta_rim"], ["model=meta_rim", "agent=a2c"], ["agent=ppo_meta"], ["agent=a2c_meta", "model=rim_gru"]],
)
def test_presets_build_fast_slow_agents(overrides: list[str]) -> None:
    cfg = _compose([*overrides, "n_envs=2"])
    env = make_condition_vec_env(validate(cfg).train, 2)
    model = build_model(cfg, env)
    assert model.slow_learner is not None and model.policy.core_name == cfg.model.core
    env.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent=ppo_meta", "agent.fast_slow.outer_horizon=0"],
         r"agent.fast_slow.outer_horizon must be a positive integer, got 0"),
        (["agent=ppo_meta", "agent.fast_slow.outer_learning_rate=-1"],
         r"agent.fast_slow.outer_learning_rate must be a positive number or null, got -1"),
        (["agent=ppo_meta", "+agent.fast_slow.bogus=1"], r"agent.fast_slow.bogus is not a key of agent.fast_slow"),
        (["agent=ppo_meta", "agent.fast_slow=null"], r"agent.fast_slow must be set for agent.name='ppo_meta'"),
        (["agent=a2c_meta", "agent.fast_slow.inner_batch_size=8"], r"fast_slow.inner_batch_size must be null for A2C"),
        (["agent=ppo_meta", "model=lstm"], r"agent.fast_slow needs a RIM-family model.core .*, got 'lstm'"),
        (["agent=a2c_meta", "model=gru"], r"agent.fast_slow needs a RIM-family model.core .*, got 'gru'"),
    ],
)  # fmt: skip
def test_invalid_fast_slow_configs_fail_before_anything_is_written(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        train(_compose(overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_refuses_a_plain_core_with_exit_2_and_no_run(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "train.py"
    result = subprocess.run(
        [sys.executable, str(script), "agent=ppo_meta", "model=lstm", f"hydra.run.dir={tmp_path / 'bad'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "agent.fast_slow needs a RIM-family model.core" in result.stderr and "got 'lstm'" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_the_meta_rim_sweep_gives_compare_three_distinct_models(tmp_path: Path) -> None:
    tiny = [t for t in TINY if not t.startswith(("env=", "total_frames", "checkpoint"))]
    tiny += ["total_frames=32", "agent.batch_size=32"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "sweep=meta_rim", "hydra.sweeper.params.seed=0",
         *tiny, f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    models = group_runs(load_runs([tmp_path]))
    assert list(models) == ["lstm ppo", "rim ppo", "rim ppo_meta"]
    assert {runs[0].config["env"]["name"] for runs in models.values()} == {"empty"}
