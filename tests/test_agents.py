"""Recurrent PPO / A2C with every core: learning runs, save/load, state resets, memory, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from agents import CORES, MiniGridCNN, RecurrentA2C, RecurrentPPO, make_core
from agents.cores import RecurrentCore
from envs import CueMemoryEnv, make_minigrid_vec_env

SMALL_RIM = dict(
    hidden_size=32, num_units=4, k=2, input_key_size=16, input_value_size=16,
    num_comm_heads=2, comm_key_size=8, comm_value_size=8,
)  # fmt: skip


def _core_kwargs(core: str) -> dict:
    return SMALL_RIM if core.startswith("rim") else dict(hidden_size=32)


@pytest.fixture(scope="module")
def doorkey() -> object:
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=0)
    yield env
    env.close()


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("algo", [RecurrentPPO, RecurrentA2C])
def test_short_learn_every_algorithm_and_core(algo: type, core: str, doorkey: object) -> None:
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=1) if algo is RecurrentPPO else dict(n_steps=5)
    model = algo("RecurrentPolicy", doorkey, policy_kwargs=dict(core=core, core_kwargs=_core_kwargs(core)), **kwargs)
    model.learn(64)
    assert model.num_timesteps >= 64
    assert type(model.policy.core.module).__name__ == {
        "lstm": "LSTM", "gru": "GRU", "rim": "RIMLSTM", "rim_gru": "RIMGRU"
    }[core]  # fmt: skip
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("core", ["gru", "rim"])
def test_save_load_round_trip_gives_identical_predictions(core: str, doorkey: object, tmp_path: Path) -> None:
    model = RecurrentPPO(
        "RecurrentPolicy", doorkey, n_steps=16, batch_size=16, n_epochs=1,
        policy_kwargs=dict(core=core, core_kwargs=_core_kwargs(core)), seed=0,
    )  # fmt: skip
    model.learn(32)
    model.save(tmp_path / "model.zip")
    loaded = RecurrentPPO.load(tmp_path / "model.zip", env=doorkey)
    assert loaded.policy.core_name == core and loaded.policy.core_kwargs == _core_kwargs(core)
    obs = doorkey.reset()
    state_a = state_b = None
    starts = np.ones(2, dtype=bool)
    for _ in range(5):
        act_a, state_a = model.predict(obs, state_a, starts, deterministic=True)
        act_b, state_b = loaded.predict(obs, state_b, starts, deterministic=True)
        np.testing.assert_array_equal(act_a, act_b)
        for a, b in zip(state_a, state_b, strict=True):
            np.testing.assert_array_equal(a, b)
        obs, _, dones, _ = doorkey.step(act_a)
        starts = dones


@pytest.mark.parametrize("core", CORES)
def test_state_resets_at_episode_start(core: str, doorkey: object) -> None:
    model = RecurrentPPO("RecurrentPolicy", doorkey, policy_kwargs=dict(core=core, core_kwargs=_core_kwargs(core)))
    obs = doorkey.reset()
    _, fresh = model.predict(obs, None, np.ones(2, dtype=bool), deterministic=True)
    _, carried = model.predict(obs, fresh, np.zeros(2, dtype=bool), deterministic=True)
    _, reset = model.predict(obs, carried, np.array([True, False]), deterministic=True)
    np.testing.assert_allclose(reset[0][:, 0], fresh[0][:, 0], atol=1e-6)  # env 0 started over
    assert not np.allclose(reset[0][:, 1], fresh[0][:, 1])  # env 1 kept its memory


@pytest.mark.parametrize("core", CORES)
def test_one_call_sequence_path_equals_step_by_step(core: str) -> None:
    torch.manual_seed(0)
    recurrent = make_core(core, 8, **_core_kwargs(core)).eval()
    x = torch.randn(6, 3, 8)
    states = (torch.randn(1, 3, 32), torch.randn(1, 3, 32))
    starts = torch.zeros(6, 3)
    starts[0, 1] = 1.0
    fast, fast_states = recurrent(x, states, starts)
    starts_mid = starts.clone()
    starts_mid[3, 2] = 1.0  # forces the step-by-step path
    slow, _ = recurrent(x, states, starts_mid)
    torch.testing.assert_close(slow[:3], fast[:3])
    torch.testing.assert_close(slow[:, :2], fast[:, :2])
    fresh_tail, _ = recurrent(x[3:, 2:3], (torch.zeros(1, 1, 32), torch.zeros(1, 1, 32)), torch.zeros(3, 1))
    torch.testing.assert_close(slow[3:, 2:3], fresh_tail)
    reset_1, _ = recurrent(x[:, 1:2], (torch.zeros(1, 1, 32), torch.zeros(1, 1, 32)), torch.zeros(6, 1))
    torch.testing.assert_close(fast[:, 1:2], reset_1)
    assert fast_states[0].shape == (1, 3, 32)


@pytest.mark.parametrize("core", ["lstm", "gru"])
@pytest.mark.parametrize("bias", [True, False])
def test_one_step_cell_path_equals_the_module(core: str, bias: bool) -> None:
    """Acting steps (L=1) go through torch.lstm_cell / gru_cell: same outputs and gradients."""
    torch.manual_seed(0)
    module = (torch.nn.LSTM if core == "lstm" else torch.nn.GRU)(8, 16, bias=bias).double()
    recurrent = RecurrentCore(module, has_cell=core == "lstm")
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    states = (torch.randn(1, 5, 16, dtype=torch.float64), torch.randn(1, 5, 16, dtype=torch.float64))
    out, (h, c) = recurrent(x, states, torch.zeros(1, 5))
    if core == "lstm":
        expected, (expected_h, expected_c) = module(x, states)
    else:
        expected, expected_h = module(x, states[0])
        expected_c = states[1]
    for a, b in ((out, expected), (h, expected_h), (c, expected_c)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad((out + c).sum(), [x, *module.parameters()])
    expected_grads = torch.autograd.grad((expected + expected_c).sum(), [x, *module.parameters()])
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("deterministic", [False, True])
def test_acting_samples_like_sb3_distributions(deterministic: bool) -> None:
    """The policy's discrete acting shortcut draws the actions SB3's Categorical would."""
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=4, seed=0)
    policy = RecurrentPPO("RecurrentPolicy", env, n_steps=8, batch_size=32, seed=0).policy
    latent = torch.randn(64, 64) * 3
    torch.manual_seed(5)
    actions, log_prob = policy._act(latent, deterministic)
    torch.manual_seed(5)
    distribution = policy._get_action_dist_from_latent(latent)
    expected = distribution.get_actions(deterministic=deterministic)
    assert torch.equal(actions, expected)
    torch.testing.assert_close(log_prob, distribution.log_prob(expected))


def test_training_sequences_are_cut_to_max_seq_len(doorkey: object) -> None:
    model = RecurrentPPO("RecurrentPolicy", doorkey, n_steps=40, batch_size=80, n_epochs=1, max_seq_len=8)
    model.learn(80)
    buffer = model.rollout_buffer
    for data in buffer.get(80):
        n_seq = data.lstm_states.pi[0].shape[1]
        assert data.observations.shape[0] // n_seq <= 8
        # each sequence starts from the state stored at its first step during the rollout
        starts = buffer.seq_start_indices
        assert len(starts) == n_seq and n_seq >= 80 // 8


def test_minibatches_are_whole_chunks_in_random_order(doorkey: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each sample once per epoch; a minibatch is batch_size / max_seq_len whole chunks."""
    from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer

    model = RecurrentPPO("RecurrentPolicy", doorkey, n_steps=32, batch_size=64, n_epochs=1, max_seq_len=8, seed=1)
    model.learn(32 * doorkey.num_envs)
    batches: list[np.ndarray] = []
    sample = RecurrentRolloutBuffer._get_samples

    def spy(buffer: RecurrentRolloutBuffer, batch_inds: np.ndarray, *args: object) -> object:
        batches.append(batch_inds.copy())
        return sample(buffer, batch_inds, *args)

    monkeypatch.setattr(RecurrentRolloutBuffer, "_get_samples", spy)
    masks = [int(data.mask.sum()) for data in model.rollout_buffer.get(64)]
    total = 32 * doorkey.num_envs
    assert masks == [64] * (total // 64)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(total))
    chunks = np.concatenate(batches).reshape(-1, 8)
    assert (chunks[:, 0] % 8 == 0).all() and (np.diff(chunks, axis=1) == 1).all()
    assert not (np.diff(chunks[:, 0]) == 8).all()  # shuffled, not in buffer order


@pytest.mark.parametrize("batch_size", [64, 48, 60])
def test_packed_update_equals_sb3_contrib_padded_update(batch_size: int) -> None:
    """Our unpadded PPO update and sb3-contrib's masked one, on the same rollout and draws."""
    from sb3_contrib import RecurrentPPO as ContribRecurrentPPO

    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=2, seed=0, env_kwargs=dict(max_steps=11))
    model = RecurrentPPO("RecurrentPolicy", env, n_steps=32, batch_size=batch_size, n_epochs=2, max_seq_len=8, seed=3)
    model.learn(64)  # a rollout with episode starts inside chunks; the buffer stays full
    assert model.rollout_buffer.episode_starts[1:].any()
    policy_state = {k: v.clone() for k, v in model.policy.state_dict().items()}
    optimizer_state = copy.deepcopy(model.policy.optimizer.state_dict())
    rng = np.random.get_state()
    model.train()
    ours = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.policy.load_state_dict(policy_state)
    model.policy.optimizer.load_state_dict(optimizer_state)
    np.random.set_state(rng)
    ContribRecurrentPPO.train(model)
    changed = 0
    for key, value in model.policy.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=1e-4, atol=1e-5, msg=key)
        changed += not torch.equal(value, policy_state[key])
    assert changed > 0


def test_whole_rollout_packed_equals_padded() -> None:
    """A2C's one-minibatch rollout: packed and sb3-contrib's padded layouts give the same samples."""
    env = make_minigrid_vec_env("MiniGrid-DoorKey-5x5-v0", n_envs=3, seed=0, env_kwargs=dict(max_steps=4))
    model = RecurrentA2C("RecurrentPolicy", env, n_steps=10, max_seq_len=4, seed=0)
    model.train = lambda: None  # keep the parameters that collected the rollout
    model.learn(30)
    buffer = model.rollout_buffer
    packed = next(buffer.get_packed(None))
    assert len(packed.index) == 30 and packed.n_seq >= 30 // 4
    padded = next(buffer.get(None))
    mask = padded.mask > 0
    with torch.no_grad():
        ours = model.policy.evaluate_packed(packed, model._distribution_actions(packed.actions))
        actions = padded.actions.long().flatten()
        theirs = model.policy.evaluate_actions(padded.observations, actions, padded.lstm_states, padded.episode_starts)
    for a, b in zip(ours, (theirs[0].flatten(), *theirs[1:]), strict=True):
        torch.testing.assert_close(a.sort().values, b[mask].sort().values)


def test_sb3_contrib_policies_train_through_sb3_contrib_update(doorkey: object) -> None:
    """Policies without evaluate_packed (sb3-contrib's own) keep sb3-contrib's padded update."""
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticCnnPolicy

    kwargs = dict(features_extractor_class=MiniGridCNN, normalize_images=False, lstm_hidden_size=16)
    model = RecurrentPPO(
        RecurrentActorCriticCnnPolicy, doorkey, n_steps=16, batch_size=32, max_seq_len=8, policy_kwargs=kwargs
    )
    assert not model._packs()
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(64)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))


def test_recurrent_policy_beats_feed_forward_on_a_memory_task() -> None:
    env = make_vec_env(CueMemoryEnv, n_envs=8, seed=0)
    kwargs = dict(n_steps=32, batch_size=128, n_epochs=4, learning_rate=1e-3, seed=0)
    recurrent = RecurrentPPO(
        "RecurrentPolicy", env, policy_kwargs=dict(core="lstm", core_kwargs=dict(hidden_size=32)), **kwargs
    )
    recurrent.learn(12_000)
    feed_forward = PPO(
        "CnnPolicy", env, policy_kwargs=dict(features_extractor_class=MiniGridCNN, normalize_images=False), **kwargs
    )
    feed_forward.learn(12_000)
    rec_return, _ = evaluate_policy(recurrent, env, n_eval_episodes=100, deterministic=True)
    ff_return, _ = evaluate_policy(feed_forward, env, n_eval_episodes=100, deterministic=True)
    assert rec_return >= 0.9
    assert ff_return <= 0.7  # can only guess the cue
    env.close()


def test_unknown_core_lists_the_valid_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unknown recurrent core 'transformer'; valid cores are \['lstm', 'gru', 'rim', 'rim_gru'\]"
    ):
        make_core("transformer", 8)


def test_k_larger_than_units_is_rejected(doorkey: object) -> None:
    with pytest.raises(ValueError, match=r"k must be in \[1, num_units\] = \[1, 4\], got k=5"):
        RecurrentPPO("RecurrentPolicy", doorkey, policy_kwargs=dict(core="rim", core_kwargs=dict(num_units=4, k=5)))


def test_rim_options_on_a_plain_core_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"core 'lstm' takes only hidden_size, got extra options \['k', 'num_units'\]"):
        make_core("lstm", 8, hidden_size=16, num_units=4, k=2)


def test_image_too_small_for_the_encoder() -> None:
    with pytest.raises(ValueError, match=r"at least 4x4, got 3x3"):
        MiniGridCNN(spaces.Box(0, 255, (3, 3, 3), np.uint8))


def test_bad_seq_len_and_no_process_wide_setting(doorkey: object) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        RecurrentPPO("RecurrentPolicy", doorkey)
        assert torch.get_num_threads() == 2  # the algorithm leaves torch's threads to the entry point
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="max_seq_len must be >= 1 or None, got 0"):
        RecurrentPPO("RecurrentPolicy", doorkey, max_seq_len=0)


def test_unknown_environment_id() -> None:
    with pytest.raises(ValueError, match="unknown environment id 'MiniGrid-Nope-v0'"):
        make_minigrid_vec_env("MiniGrid-Nope-v0")
    assert isinstance(gym.make("MiniGrid-Empty-5x5-v0").unwrapped, gym.Env)


def test_a2c_takes_one_rmsprop_step_per_rollout(doorkey: object) -> None:
    model = RecurrentA2C("RecurrentPolicy", doorkey, policy_kwargs=dict(core="gru", core_kwargs=dict(hidden_size=32)))
    assert isinstance(model.policy.optimizer, torch.optim.RMSprop)
    assert model.n_steps == 5 and model.n_epochs == 1
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(5 * 2 * 3)  # three rollouts of 5 steps x 2 envs
    assert model._n_updates == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
