"""Hydra config tree composes per group; train() writes a run folder; bad configs fail early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from agents.experiment.config import typed_config
from agents.experiment.run import ConfigError, build_model, train, validate
from envs.levels import make_condition_vec_env
from rims import RIMCell

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = [
    "total_frames=64", "n_envs=2", "eval.every_frames=32", "eval.episodes=1", "eval.final_episodes=2",
    "agent.n_steps=16", "agent.batch_size=32", "model.hidden_size=16", "progress_bar=false",
]  # fmt: skip


# Evaluations in tiny runs: the iid condition only and no GIFs, unless a test asks for more (later
# overrides win). An untrained policy plays every 16x16 episode to its time limit and each GIF
# renders every frame: ~10 s a run.
QUICK_EVAL = ["eval.conditions=[iid]", "eval.gifs=false"]


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=[*QUICK_EVAL, *overrides])


@pytest.mark.parametrize(
    "group",
    ["model=lstm", "model=gru", "model=rim", "model=rim_gru", "model=brims", "model=rim_sw", "model=scoff",
     "model=meta_rim", "agent=ppo", "agent=a2c", "agent=ppo_meta", "agent=a2c_meta"],
)  # fmt: skip
def test_every_model_and_agent_composes_and_builds(group: str) -> None:
    cfg = _compose([group, "n_envs=2"])
    split = validate(cfg)
    env = make_condition_vec_env(split.train, 2)
    model = build_model(cfg, env)
    assert model.policy.core_name == cfg.model.core
    env.close()


@pytest.mark.parametrize(
    ("preset", "attribute", "value"),
    [("rim_u6k4", "num_units", 6), ("rim_dropout", "attention_dropout", 0.1),
     ("rim_input_score", "selection", "input_score"), ("rim_k2", "k", 2)],
)  # fmt: skip
def test_each_rim_variant_preset_reaches_the_layer(preset: str, attribute: str, value: object) -> None:
    cfg = _compose([f"model={preset}", "n_envs=2"])
    env = make_condition_vec_env(validate(cfg).train, 2)
    cells = [m for m in build_model(cfg, env).policy.core.modules() if isinstance(m, RIMCell)]
    env.close()
    assert cells and all(getattr(cell, attribute) == value for cell in cells)


@pytest.mark.parametrize("preset", sorted(path.stem for path in (CONFIGS / "model").glob("*.yaml")))
def test_each_model_preset_names_its_run_folders(preset: str) -> None:
    cfg = _compose([f"model={preset}"])
    assert cfg.model.name == preset
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        hydra_node = compose(config_name="train", overrides=[f"model={preset}"], return_hydra_config=True).hydra
    folders = OmegaConf.to_container(hydra_node, resolve=False)
    assert "_${model.name}_" in folders["run"]["dir"] and "_${model.name}_" in folders["sweep"]["subdir"]


def test_a_config_without_a_model_name_is_named_by_its_core() -> None:
    data = OmegaConf.to_container(_compose(["model=rim_sw"]), resolve=True)
    del data["model"]["name"]
    assert typed_config(OmegaConf.create(data)).model.name == "rim"


@pytest.mark.parametrize("split", ["empty", "doorkey", "multiroom", "crossing", "lava", "fourrooms"])
def test_every_env_composes(split: str) -> None:
    assert validate(_compose([f"env={split}"])).name == split


def test_defaults_are_rim_ppo_on_doorkey() -> None:
    cfg = _compose([])
    assert (cfg.model.core, cfg.agent.name, cfg.env.name) == ("rim", "ppo", "doorkey")
    assert cfg.seed == 0 and cfg.total_frames > 0 and cfg.eval.every_frames > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.k=5"], r"model.k must be in \[1, model.num_units\] = \[1, 4\], got 5"),
        (["model.hidden_size=130"], r"model.hidden_size must be divisible by model.num_units=4, got 130"),
        (["total_frames=0"], r"total_frames must be a positive integer, got 0"),
        (["env.test_seeds.start=5"], r"test seeds \[5, 10005\) overlap train seeds"),
        (["device=cuda"], r"device must be available: got 'cuda', but torch.cuda.is_available\(\) is False"),
        (["device=gpu"], r"device must be 'cpu', 'cuda' or 'cuda:<index>', got 'gpu'"),
        (["seed=-1"], r"seed must be an integer >= 0, got -1"),
        (["logger.mode=ofline"], r"logger.mode must be one of \['offline', 'online', 'disabled'\], got 'ofline'"),
        (["+agent.bogus=1"], r"agent.bogus is not a key of agent; valid keys: \['batch_size', "),
        (["agent.max_seq_len=0"], r"agent.max_seq_len must be a positive integer, got 0"),
        # issue 15: n_epochs=0 ended in an UnboundLocalError after the run folder was created ...
        (["agent.n_epochs=0"], r"agent.n_epochs must be a positive integer, got 0"),
        (["agent.batch_size=0"], r"agent.batch_size must be a positive integer, got 0"),
        # ... and these trained silently
        (["agent.gamma=1.5"], r"agent.gamma must be in \[0.0, 1.0\], got 1.5"),
        (["agent.clip_range=-0.2"], r"agent.clip_range must be in \(0.0, 1.0\], got -0.2"),
        (["agent.gae_lambda=2"], r"agent.gae_lambda must be in \[0.0, 1.0\], got 2.0"),
        (["agent.ent_coef=-1"], r"agent.ent_coef must be a number >= 0, got -1.0"),
        (["agent.max_grad_norm=0"], r"agent.max_grad_norm must be a positive number, got 0.0"),
        (["model.top_down=true"], r"model.top_down needs model.num_layers >= 2"),
        (["env.train.env_id=MiniGrid-DoorKey-7x7-v0"], r"env.train.env_id must be an environment id registered"),
        (["agent=ppo_meta", "model=lstm"], r"agent.fast_slow needs a RIM-family model.core"),
        (["eval.conditions=[iid,doorkey_9x9]"], r"eval.conditions must name conditions of split.*doorkey_9x9"),
        (["eval.conditions=[]"], r"eval.conditions must be null or a non-empty list of condition names, got \[\]"),
        # issue 15: these trained (a minibatch above the rollout is the rollout) or failed after the run folder
        (["agent.batch_size=2048"], r"agent.batch_size must be in \[1, agent.n_steps \* n_envs\] = .*got 2048"),
        (["n_envs=1"], r"agent.batch_size must be in \[1, agent.n_steps \* n_envs\] = .*\[1, 128\].*got 256"),
        (["+env.train.env_kwargs={bogus:1}"], r"env.train.env_kwargs \{'bogus': 1\} must be arguments that make"),
        (["+env.test.doorkey_16x16.env_kwargs={size:2}"], r"env.test.doorkey_16x16.env_kwargs \{'size': 2\} must"),
    ],
)
def test_invalid_configs_fail_before_anything_is_written(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        train(_compose(overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.k", "abc", r"model.k must be of type integer, got 'abc'"),
        ("agent.lerning_rate", 0.1, r"agent.lerning_rate is not a key of agent; valid keys: \['batch_size'"),
        ("eval.gifs", "sometimes", r"eval.gifs must be of type boolean, got 'sometimes'"),
    ],
)
def test_a_plain_dictconfig_is_checked_like_a_composed_one(
    key: str, value: object, message: str, tmp_path: Path
) -> None:
    data = OmegaConf.to_container(_compose([]), resolve=True)
    group, leaf = key.split(".")
    data[group][leaf] = value
    with pytest.raises(ConfigError, match=message):
        train(OmegaConf.create(data), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("raised", "expected"),
    [(ValueError("k must be in [1, 4], got 5"), ConfigError), (RuntimeError("an internal bug"), RuntimeError),
     (AssertionError("an internal invariant"), AssertionError)],
)  # fmt: skip
def test_only_argument_errors_of_the_build_become_config_errors(
    raised: Exception, expected: type[Exception], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build_model(cfg: DictConfig, env: object) -> None:
        raise raised

    monkeypatch.setattr("agents.experiment.run.build_model", build_model)
    with pytest.raises(expected, match=str(raised).replace("[", r"\[")) as info:
        train(_compose(["env=empty", *TINY]), tmp_path / "run")
    assert type(info.value) is expected  # a bug is not relabelled as the user's mistake
    assert not (tmp_path / "run").exists()


def test_train_writes_the_run_folder(tmp_path: Path) -> None:
    metrics = train(_compose(["model=gru", "env=empty", *TINY, "eval.conditions=null"]), tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "model.zip",
        "ood_curves.csv",
        "ood_curves.json",
        "eval.csv",
        "eval.json",
        "metrics.json",
    ):
        assert (run / name).is_file(), name
    assert set(metrics) == {
        "iid",
        "empty_6x6",
        "empty_8x8",
        "empty_16x16",
        "empty_random_6x6",
        "iid_background",
        "iid_distractors",
    }
    assert all(0.0 <= v <= 1.0 for v in metrics.values())


def test_eval_conditions_restrict_every_evaluation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["model=lstm", "env=empty", "eval.conditions=[empty_8x8,iid]", "eval.gifs=true", *TINY]
    metrics = train(_compose(overrides), run)
    assert list(metrics) == ["iid", "empty_8x8"]  # the split's order
    assert sorted(p.stem for p in (run / "media").glob("*.gif")) == ["empty_8x8", "iid"]
    curves = (run / "ood_curves.csv").read_text()
    assert "empty_16x16" not in curves and "empty_8x8" in curves


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("model.k=9", "model.k must be in [1, model.num_units] = [1, 4], got 9"),
        ("agent.lerning_rate=0.1", "agent.lerning_rate is not a key of agent (agent group); valid keys: ['batch_size'"),
        ("model.k=abc", "model.k must be of type integer, got 'abc'"),
        ("agent.n_epochs=0", "agent.n_epochs must be a positive integer, got 0"),
        # issue 15: a traceback and exit 1 (the env group composes untyped) ...
        ("env.train.envid=X", "env.train.envid is not a key of env.train (env group); valid keys: ['env_id', "),
        # ... a traceback after the run folder was made ...
        ("+env.train.env_kwargs={bogus:1}", "env.train.env_kwargs {'bogus': 1} must be arguments that make"),
        # ... and a run of the defaults (an optional group skips an unknown option)
        ("sweep=rim_vs_lstmm", "sweep=rim_vs_lstmm is not an option of the config group sweep; options: ['meta_rim',"),
        ("resume=/nonexistent_i15/run", "resume must be true, false or a run folder with config.yaml, got '/nonex"),
    ],
)
def test_cli_exits_2_with_the_reason_and_leaves_no_run(override: str, reason: str, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
    result = subprocess.run(
        [sys.executable, str(script), override, f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"invalid config: {reason}" in result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow  # Hydra's basic launcher; the fast suite runs the same sweep on joblib (test_sweeps.py)
def test_a_two_run_sweep_gives_each_run_its_own_folder(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
    result = subprocess.run(
        [sys.executable, str(script), "-m", "model=lstm,gru", "env=empty", *TINY, f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and (p / "model.zip").is_file())
    assert [r.name.split("_")[2] for r in runs] == ["lstm", "gru"]


def test_a_sweep_lists_its_failed_jobs_one_line_each(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.py"
    overrides = [
        "-m",
        "model=gru",
        "env=empty",
        *TINY,
        "logger=none",
        "agent.gamma=0.9,1.5",
        f"hydra.sweep.dir={tmp_path}",
    ]
    result = subprocess.run([sys.executable, str(script), *overrides], capture_output=True, text=True)
    assert result.returncode != 0
    assert "1 job(s) of the sweep in" in result.stderr
    assert (
        "job 1 (" in result.stderr
        and "agent.gamma=1.5): invalid config: agent.gamma must be in [0.0, 1.0], got 1.5" in result.stderr
    )
    assert "job 0" not in result.stderr.split("failed:")[-1]
    assert (tmp_path / "0_ppo_gru_empty_s0" / "metrics.json").is_file()
