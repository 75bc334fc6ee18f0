"""The selection remedies inside the agents: the core's loss term in PPO and A2C, the initial state
at every episode start, deterministic acting, and the typed config keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents import RecurrentA2C, RecurrentPPO
from agents.experiment.config import RIMModelConfig
from agents.experiment.config.checks import ConfigError
from agents.experiment.run import TrainingInterruptedError, train
from envs import make_minigrid_vec_env
from tests.test_run_lifecycle import TINY, _compose, _policy, _rows, _SignalAt

REMEDIES = dict(
    hidden_size=32, num_units=4, k=2, input_key_size=16, input_value_size=16, num_comm_heads=2, comm_key_size=8,
    comm_value_size=8, selection_noise=0.3, selection_noise_learned=True, balance_rate=0.01, balance_loss=0.01,
    initial_state="learned",
)  # fmt: skip


@pytest.fixture(scope="module")
def doorkey() -> object:
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=0)
    yield env
    env.close()


@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_the_core_loss_term_is_added_and_logged(algo: type, doorkey: object) -> None:
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1) if algo is RecurrentPPO else dict(n_steps=8)
    model = algo("RecurrentPolicy", doorkey, policy_kwargs=dict(core="rim", core_kwargs=REMEDIES), seed=0, **kwargs)
    model.learn(32)
    aux = model.logger.name_to_value.get("train/aux_loss")
    assert aux is not None and 0.0 < aux < 0.1  # alpha * U * sum f P with alpha = 0.01: near 0.01
    layer = model.policy.core.module.layers[0]
    assert layer.selection_bias.abs().sum() > 0  # moved by the training forwards
    assert layer.initial_h.abs().sum() > 0  # the learned initial state trained


def test_the_packed_update_counts_the_real_samples_only() -> None:
    """Short episodes pad the packed minibatch's sequences; the RIM layers count only the real samples."""
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=3, seed=0, env_kwargs=dict(max_steps=4))
    model = RecurrentPPO(
        "RecurrentPolicy", env, n_steps=10, batch_size=30, n_epochs=1, max_seq_len=8,
        policy_kwargs=dict(core="rim", core_kwargs=dict(REMEDIES, num_layers=2)), seed=0,
    )  # fmt: skip
    model.train = lambda: None  # keep the rollout
    model.learn(30)
    seen: list[torch.Tensor] = []
    rim = model.policy.core.module
    rim.register_forward_pre_hook(lambda module, args: seen.append(module.layers[1]._counted_rows.clone()))
    packed = next(model.rollout_buffer.get_packed(None))
    model.policy.evaluate_packed(packed, model._distribution_actions(packed.actions))
    [rows] = seen
    assert rows.shape == (packed.max_len, packed.n_seq) and packed.max_len * packed.n_seq > len(packed.index)
    assert rows.sum() == len(packed.index) and torch.equal(rows.flatten().nonzero().flatten().sort().values,
                                                            packed.index.sort().values)  # fmt: skip
    env.close()


class _PredictEachStep(BaseCallback):
    """Act with ``predict`` on other environments at every rollout step, between the step and the buffer's
    ``add`` (as a periodic evaluation does): the rollout's draws must not be taken from these calls."""

    def __init__(self, env: object) -> None:
        super().__init__()
        self.env, self.state = env, None

    def _on_step(self) -> bool:
        obs = self.env.reset()
        _, self.state = self.model.predict(obs, self.state, np.ones(self.env.num_envs, dtype=bool))
        return True


@pytest.mark.parametrize(("initial_state", "noise"), [("zeros", 0.0), ("learned", 0.0), ("random", 0.0),
                                                     ("zeros", 2.0), ("random", 2.0)])  # fmt: skip
@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_the_update_replays_the_rollout_exactly(algo: type, initial_state: str, noise: float) -> None:
    """Before any step, the update's log-probabilities and values equal the rollout's (PPO's ratio is 1), also
    at episode starts with a random initial state, and with noisy top-k: the buffer keeps the rollout's draws
    (initial state, selection noise) and the update replays them instead of drawing others. Episodes of 3, 4
    and 5 steps (truncation bootstraps the value at steps where another environment starts an episode), a
    callback that predicts on two other environments at every step, two layers, the training forward with
    gradients (the fused path)."""
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=3, seed=0, env_kwargs=dict(max_steps=4))
    for i, one in enumerate(env.envs):
        one.unwrapped.max_steps = 3 + i
    other = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=1)
    core_kwargs = dict(REMEDIES, selection_noise=noise, initial_state=initial_state, initial_state_std=0.5)
    core_kwargs.update(selection_noise_learned=noise > 0, num_layers=2)
    model = algo("RecurrentPolicy", env, n_steps=12, max_seq_len=6, seed=0,
                 policy_kwargs=dict(core="rim", core_kwargs=core_kwargs))  # fmt: skip
    model.train = lambda: None  # keep the parameters that collected the rollout
    model.learn(36, callback=_PredictEachStep(other))
    packed = next(model.rollout_buffer.get_packed(None))
    assert packed.old_values.numel() == 36
    assert (packed.noise is not None) == (noise > 0)
    if packed.noise is not None:  # (B, num_layers * U) draws, one per sample
        assert packed.noise.shape == (36, 8) and bool((packed.noise != 0).all())
    model.policy.set_training_mode(True)
    values, log_prob, _ = model.policy.evaluate_packed(packed, model._distribution_actions(packed.actions))
    torch.testing.assert_close(log_prob.detach(), packed.old_log_prob, rtol=0, atol=1e-5)
    torch.testing.assert_close(values.detach(), packed.old_values, rtol=0, atol=1e-5)
    env.close()
    other.close()


def test_without_the_packed_update_rollouts_draw_no_noise() -> None:
    """sb3-contrib's padded update (``max_seq_len=None``) cannot replay draws: the rollouts then act without
    noise (the update draws its own, as in supervised training) and the core keeps nothing."""
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=0)
    core_kwargs = dict(REMEDIES, selection_noise=2.0, initial_state="random", balance_loss=0.0)
    model = RecurrentPPO("RecurrentPolicy", env, n_steps=8, batch_size=16, n_epochs=1, max_seq_len=None, seed=0,
                         policy_kwargs=dict(core="rim", core_kwargs=core_kwargs))  # fmt: skip
    core = model.policy.core
    assert not core.keeps_rollout_draws
    model.learn(16)
    assert core.last_noise is None and core.last_initial is None
    env.close()


def test_no_loss_term_without_the_option(doorkey: object) -> None:
    core_kwargs = dict(REMEDIES, balance_loss=0.0)
    model = RecurrentPPO(
        "RecurrentPolicy", doorkey, n_steps=16, batch_size=16, n_epochs=1,
        policy_kwargs=dict(core="rim", core_kwargs=core_kwargs), seed=0,
    )  # fmt: skip
    model.learn(32)
    assert "train/aux_loss" not in model.logger.name_to_value


@pytest.mark.parametrize("initial_state", ["learned", "random"])
def test_every_episode_start_takes_the_initial_state(initial_state: str, doorkey: object) -> None:
    core_kwargs = dict(REMEDIES, initial_state=initial_state, initial_state_std=0.5)
    model = RecurrentPPO("RecurrentPolicy", doorkey, policy_kwargs=dict(core="rim", core_kwargs=core_kwargs), seed=0)
    core = model.policy.core
    if initial_state == "learned":
        with torch.no_grad():
            core.module.layers[0].initial_h.uniform_(-0.5, 0.5)
            core.module.layers[0].initial_c.uniform_(-0.5, 0.5)
    features = torch.randn(3, 2, model.policy.features_dim)
    states = (torch.randn(1, 2, 32), torch.randn(1, 2, 32))
    starts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # env 0 starts over at step 1
    core.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        out, _ = core(features, states, starts)
        torch.manual_seed(5)
        _, mid = core.module(features[:1], states)
        initial = core.module.initial_state(2, features)  # the draw the reset at step 1 makes
        expected, _ = core.module(features[1:2, :1], tuple(s[:, :1] for s in initial))
    torch.testing.assert_close(out[1, :1], expected[0])
    assert not torch.allclose(out[1, :1], core.module(features[1:2, :1], tuple(s[:, :1] for s in mid))[0][0])


def test_acting_is_deterministic_for_a_seed_with_every_remedy(doorkey: object) -> None:
    core_kwargs = dict(REMEDIES, initial_state="random")
    model = RecurrentPPO(
        "RecurrentPolicy", doorkey, n_steps=16, batch_size=16, n_epochs=1,
        policy_kwargs=dict(core="rim", core_kwargs=core_kwargs), seed=0,
    )  # fmt: skip
    model.learn(32)
    obs = doorkey.reset()

    def act(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        state, starts, acted = None, np.ones(2, dtype=bool), []
        for _ in range(4):
            action, state = model.predict(obs, state, starts, deterministic=True)
            acted += [action, state[0].copy()]
            starts = np.zeros(2, dtype=bool)
        return acted

    for a, b in zip(act(7), act(7), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_remedies_are_typed_config_keys() -> None:
    config = RIMModelConfig(name="rim", balance_loss=0.01, selection_noise=0.5, initial_state="learned")
    assert config.balance_loss == 0.01
    assert RIMModelConfig(name="rim").balance_loss is None  # null: the layer's default (0.0, off)
    with pytest.raises(ConfigError, match=r"model.balance_loss must be a number >= 0, got -1.0"):
        RIMModelConfig(name="rim", balance_loss=-1.0)
    with pytest.raises(ConfigError, match=r"model.selection_noise_learned must be true or false, got 1"):
        RIMModelConfig(name="rim", selection_noise_learned=1)
    with pytest.raises(ConfigError, match=r"model.selection_noise_anneal must be an integer >= 0, got -3"):
        RIMModelConfig(name="rim", selection_noise_anneal=-3)
    with pytest.raises(ConfigError, match=r"model.initial_state must be one of \['zeros', 'learned', 'random'\]"):
        RIMModelConfig(name="rim", initial_state="ones")


def test_the_remedies_compose_as_hydra_overrides() -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from agents.experiment.config import typed_config

    configs = Path(__file__).resolve().parent.parent / "configs"
    overrides = ["model.balance_loss=0.01", "model.selection_noise=0.5", "model.initial_state=random"]
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = typed_config(compose(config_name="train", overrides=overrides))
        assert (cfg.model.balance_loss, cfg.model.selection_noise, cfg.model.initial_state) == (0.01, 0.5, "random")
        with pytest.raises(ConfigError, match=r"model.balance_rate must be a number >= 0, got -0.5"):
            typed_config(compose(config_name="train", overrides=["model.balance_rate=-0.5"]))


def test_a_resumed_run_with_every_remedy_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """Noise (rollout draws replayed), the balancing bias, the balance loss and a random initial state, through
    ``train``: interrupted after the first rollout and resumed, the run ends where the uninterrupted one does."""
    remedies = [*TINY, "logger=none", "model=rim", "model.selection_noise=1.0", "model.selection_noise_learned=true",
                "model.balance_rate=0.01", "model.balance_loss=0.01", "model.initial_state=random"]  # fmt: skip
    reference = tmp_path / "reference"
    expected = train(_compose(remedies), reference)
    run = tmp_path / "run"
    with pytest.raises(TrainingInterruptedError):
        train(_compose(remedies), run, callbacks=[_SignalAt(40)])
    assert train(_compose([*remedies, "resume=true"]), run) == expected
    want, got = _policy(reference), _policy(run)
    assert all(torch.equal(want[k], got[k]) for k in want) and "core.module.layers.0.selection_bias" in got
    assert _rows(run) == _rows(reference)


def test_the_balance_loss_needs_an_update_that_adds_it(doorkey: object) -> None:
    """sb3-contrib's padded PPO update has no hook for the core's loss term: refused at construction, with the
    reason; A2C's padded path adds it."""
    kwargs = dict(policy_kwargs=dict(core="rim", core_kwargs=REMEDIES), max_seq_len=None, seed=0)
    with pytest.raises(ValueError, match=r"balance_loss=0.01 needs the packed update \(max_seq_len set"):
        RecurrentPPO("RecurrentPolicy", doorkey, n_steps=16, batch_size=16, **kwargs)
    model = RecurrentA2C("RecurrentPolicy", doorkey, n_steps=8, **kwargs)
    model.learn(16)
    assert model.logger.name_to_value.get("train/aux_loss", 0.0) > 0.0
