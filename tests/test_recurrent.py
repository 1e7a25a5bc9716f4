"""The recurrent core and memory: sequences against a naive per-step loop, resets at episode starts across
vector envs, the `Memory` of played episodes, and bad config values."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.ppo import PPOAgent, PPOConfig
from rlagents.networks import MLPBackbone, Net, NetworkConfig, RecurrentCore, build_core
from rlagents.recurrent import Memory, episode_features
from tests.test_cli import run_bad


def naive(core: RecurrentCore, x: torch.Tensor, starts: np.ndarray) -> torch.Tensor:
    """The same sequence one step and one env at a time, with a hand-written reset: what `forward` must equal."""
    cell = core.rnn
    outs = torch.zeros(x.shape[0], x.shape[1], core.out_features)
    for b in range(x.shape[1]):
        h = (torch.zeros(1, 1, core.out_features), torch.zeros(1, 1, core.out_features))
        for t in range(x.shape[0]):
            if starts[t, b]:
                h = (torch.zeros_like(h[0]), torch.zeros_like(h[1]))
            if core.kind == "lstm":
                out, h = cell(x[t:t + 1, b:b + 1], h)
            else:
                out, hh = cell(x[t:t + 1, b:b + 1], h[0])
                h = (hh, hh)
            outs[t, b] = out[0, 0]
    return outs


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_sequence_equals_a_naive_per_step_loop_with_resets_per_env(kind):
    torch.manual_seed(0)
    core = RecurrentCore(kind, 5, 8)
    steps, envs = 13, 4
    x = torch.randn(steps, envs, 5)
    starts = np.zeros((steps, envs), bool)
    starts[0] = True
    starts[3, 1] = starts[7, 2] = starts[7, 0] = starts[12, 3] = True  # episodes end at different steps
    out, _ = core(x, core.initial_state(envs), starts)
    assert torch.allclose(out, naive(core, x, starts), atol=1e-6)
    # stepping one step at a time gives the same outputs and the same final state
    state = core.initial_state(envs)
    stepped = []
    for t in range(steps):
        o, state = core.step(x[t], state, starts[t])
        stepped.append(o)
    _, final = core(x, core.initial_state(envs), starts)
    assert torch.allclose(torch.stack(stepped), out, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(state, final))


def test_a_start_clears_that_env_only_and_a_state_carries_across_calls():
    torch.manual_seed(1)
    core = RecurrentCore("lstm", 3, 6)
    x = torch.randn(10, 2, 3)
    none = np.zeros((10, 2), bool)
    whole, _ = core(x, core.initial_state(2), none)
    first, state = core(x[:4], core.initial_state(2), none[:4])
    rest, _ = core(x[4:], state, none[4:])  # a sequence split in two, the state carried: the same outputs
    assert torch.allclose(torch.cat([first, rest]), whole, atol=1e-6)
    starts = none.copy()
    starts[4, 1] = True
    out, _ = core(x, core.initial_state(2), starts)
    assert torch.allclose(out[:, 0], whole[:, 0])  # env 0 never restarted
    fresh, _ = core(x[4:, 1:], core.initial_state(1), none[4:, 1:])
    assert torch.allclose(out[4:, 1], fresh[:, 0], atol=1e-6)  # env 1 from step 4 on: as if from zeros


def test_a_reset_clears_non_finite_state():
    core = RecurrentCore("gru", 2, 3)
    state = (torch.full((2, 3), float("nan")),)
    out, _ = core.step(torch.zeros(2, 2), state, np.array([True, False]))
    assert torch.isfinite(out[0]).all() and not torch.isfinite(out[1]).all()


def test_net_with_a_core_and_the_feed_forward_net_keeps_its_keys():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    config = NetworkConfig(hidden=(16,), recurrent="gru", recurrent_hidden=12)
    backbone = MLPBackbone(space, (16,))
    core = build_core(config, backbone.features_dim)
    net = Net(backbone, torch.nn.Linear(core.out_features, 2), core)
    obs = torch.randn(6 * 3, 4)
    starts = np.zeros((6, 3), bool)
    starts[0] = True
    out, _ = net.sequence(obs, core.initial_state(3), starts)
    assert out.shape == (18, 2)
    step_out, _ = net.step(obs[:3], core.initial_state(3), starts[0])
    assert torch.allclose(step_out, out[:3], atol=1e-6)
    assert build_core(NetworkConfig(), 16) is None
    plain = Net(MLPBackbone(space, (16,)), torch.nn.Linear(16, 2))
    assert not any(key.startswith("core") for key in plain.state_dict())


def test_memory_resets_rows_at_episode_starts_and_follows_the_batch_size():
    torch.manual_seed(2)
    core = RecurrentCore("lstm", 2, 4)
    memory = Memory({"policy": core}, n=3)
    x = torch.randn(3, 2)
    assert memory.next_starts(3).all()  # nothing played yet: every row begins
    memory.step("policy", x, np.ones(3, bool))
    memory.begin(np.array([False, True, False]))
    starts = memory.next_starts(3)
    assert starts.tolist() == [False, True, False] and not memory.next_starts(3).any()
    before = memory.state("policy", 3)
    memory.step("policy", x, starts)
    fresh, _ = core.step(x, core.initial_state(3), np.ones(3, bool))
    after = memory.state("policy", 3)
    assert torch.allclose(after[0][1], fresh[1]) and not torch.allclose(after[0][0], fresh[0])
    assert not torch.equal(before[0], after[0])
    memory.begin(np.array([True, False, False]))
    saved = memory.state_dict()
    copy = Memory({"policy": core}, n=3)
    copy.load_state_dict(saved)
    assert np.array_equal(copy.starts, memory.starts)
    assert all(torch.equal(a, b) for a, b in zip(copy.state("policy", 3), after))
    other = Memory({"policy": core}, n=2)  # saved with another number of envs: every row starts afresh
    other.load_state_dict(saved)
    assert other.starts.all() and not other.state("policy", 2)[0].any()
    assert memory.next_starts(5).all()  # another batch size: new episodes


@pytest.mark.parametrize("agent, sets, message", [
    ("ppo", ["recurrent=rnn"], "recurrent: bad value 'rnn'; allowed: "),
    ("reinforce", ["recurrent=lstm", "recurrent_hidden=0"], "recurrent_hidden: bad value 0; must be >= 1"),
    ("ppo", ["recurrent=gru", "recurrent_hidden=60000"], "recurrent_hidden=60000"),
])
def test_bad_recurrent_settings_are_refused_with_exit_2_and_nothing_written(agent, sets, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--agent", agent, "--env", "CartPole-v1", "--run-dir", str(run_dir), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert message in run_bad(args, capsys)
    assert not run_dir.exists()


class CueRecall(gym.Env):
    """A cue (one of two) is shown at the first step only; `delay` blank steps later a query step asks for it:
    action = cue earns 1, the other 0, and the episode ends. Blank and query observations are the same in every
    episode, so a memoryless policy picks one fixed action at the query and is right only when the cue happens
    to be that one (about half the episodes); remembering the cue gets 1 every time."""

    def __init__(self, delay: int = 2):
        self.delay = delay
        self.observation_space = gym.spaces.Box(0.0, 1.0, (3,), np.float32)  # cue 0, cue 1, query
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        elif self.t == self.delay + 1:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        if self.t == self.delay + 1:
            return self._obs(), float(int(action) == self.cue), True, False, {}
        self.t += 1
        return self._obs(), 0.0, False, False, {}


def cue_recall() -> gym.Env:
    return CueRecall()


def test_episode_features_run_each_episode_from_a_zero_state():
    torch.manual_seed(3)
    core = RecurrentCore("lstm", 4, 5)
    backbone = torch.nn.Identity()
    lengths = [3, 1, 5]
    obs = torch.randn(sum(lengths), 4)
    out = episode_features(backbone, core, obs, lengths)
    first = 0
    for n in lengths:  # each episode alone, stepped from zeros
        state, rows = core.initial_state(1), []
        for t in range(n):
            o, state = core.step(obs[first + t:first + t + 1], state, np.array([t == 0]))
            rows.append(o)
        assert torch.allclose(out[first:first + n], torch.cat(rows), atol=1e-6)
        first += n


# ---------------------------------------------------------------- agents with memory


def make_ppo(n_envs: int = 3, **kw) -> PPOAgent:
    kw = {"hidden": (8,), "n_steps": 6, "batch_size": 12, "n_epochs": 1, "recurrent": "lstm",
          "recurrent_hidden": 8, **kw}
    return PPOAgent(PPOConfig(**kw), CueRecall().observation_space, gym.spaces.Discrete(2), n_envs=n_envs,
                    total_steps=1000, device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("shared", [False, True])
def test_ppo_update_recomputes_what_acting_computed_with_resets_across_envs(shared):
    """The learner's pass over the rollout (from each env's stored initial state, zeroing where an episode
    began) gives exactly the log-probabilities of the actions as the policy computed them while acting, in a
    rollout that is not the first (the initial states are not zeros) and with episodes ending at different
    steps in different envs."""
    agent = make_ppo(shared_backbone=shared)
    rng = np.random.default_rng(0)
    acted: list[np.ndarray] = []
    actions_of = agent._actions
    agent._actions = lambda out, explore, mask=None: (acted.append(out.copy()), actions_of(out, explore, mask))[1]
    seen: dict[str, torch.Tensor] = {}
    start = agent.learner.start

    def spy(*args):
        values, last = start(*args)
        seen["log_prob"] = agent.learner.old_log_prob.clone()
        seen["actions"] = agent.learner.actions.clone()
        return values, last

    agent.learner.start = spy
    done_at = {2: [1], 7: [0, 2], 9: [1]}  # vector step: envs whose episode ends there
    for t in range(12):
        obs = rng.uniform(0, 1, (3, 3)).astype(np.float32)
        actions = agent.act(obs, explore=True)
        done = np.zeros(3, bool)
        done[done_at.get(t, [])] = True
        agent.observe(obs, actions, rng.normal(size=3), obs, done, np.zeros(3, bool))
        if t == 5:
            acted.clear()  # the second rollout (steps 6-11) is the one checked
    assert agent.updates == 2
    starts = agent.rollout["starts"]
    assert starts[2].tolist() == [True, False, True] and starts[4].tolist() == [False, True, False]
    assert starts.sum() == 3  # only there: envs continue their episodes across rollouts
    logits = torch.as_tensor(np.concatenate(acted))
    expected = torch.log_softmax(logits, dim=1).gather(1, seen["actions"].long()[:, None])[:, 0]
    assert torch.allclose(seen["log_prob"], expected, atol=1e-5)


def test_greedy_memory_is_separate_from_training_and_reset_per_episode():
    agent = make_ppo(n_envs=2)
    obs = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (2, 1))
    first = agent._head(obs)  # greedy play: a fresh episode
    for _ in range(3):
        later = agent._head(obs)
    assert not np.allclose(first, later)  # the state moved on
    agent.act(obs, explore=True)  # training envs step their own memory; greedy play's is untouched
    agent.reset_memory(np.array([True, False]))
    again = agent._head(obs)
    assert np.allclose(again[0], first[0], atol=1e-6) and not np.allclose(again[1], first[1])
    agent.reset_memory()  # every episode, any batch size
    assert np.allclose(agent._head(obs[:1]), first[:1], atol=1e-6)


def test_a_recurrent_policy_refuses_export_with_exit_2(tmp_path, capsys):
    from rlagents.export import main as export_main
    from rlagents.train import main as train_main

    run = tmp_path / "run"
    assert train_main(["--agent", "reinforce", "--env", "CartPole-v1", "--steps", "200", "--eval-every", "0",
                       "--eval-episodes", "2", "--set", "recurrent=gru", "--set", "recurrent_hidden=8",
                       "--run-dir", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    message = run_bad([str(run), "--format", "onnx"], capsys, entry=export_main)
    assert "recurrent: gru cannot be exported: its action depends on a hidden state" in message
    assert not list(run.glob("*.onnx"))


@pytest.mark.parametrize("agent, config", [
    ("ppo", {"n_envs": 8, "n_steps": 16, "batch_size": 64, "n_epochs": 4, "lr": 3.0e-3}),
    ("reinforce", {"n_envs": 8, "episodes_per_update": 16, "lr": 1.0e-2}),
])
def test_on_a_memory_task_the_recurrent_agent_learns_and_the_memoryless_one_cannot(agent, config, tmp_path):
    """CueRecall: the recurrent policy answers every query (return 1); the memoryless one, whose query
    observation is the same in every episode, gives one fixed answer and is right in only the episodes whose
    cue happens to be that answer (about half of the 40 evaluation episodes)."""
    import rlagents

    config = {**config, "hidden": (16,), "recurrent_hidden": 16, "eval_every": 3000, "eval_episodes": 40,
              "checkpoint_every": 0}
    memory = rlagents.train(agent, cue_recall, seed=0, steps=3000, config={**config, "recurrent": "lstm"},
                            run_dir=tmp_path / "lstm")
    memoryless = rlagents.train(agent, cue_recall, seed=0, steps=3000, config={**config, "recurrent": "none"},
                                run_dir=tmp_path / "none")
    assert memory.final_return == 1.0
    assert 0.25 <= memoryless.final_return <= 0.75
    # the Python API's Policy plays it too, one episode at a time, reset at each start
    policy = rlagents.load(tmp_path / "lstm")
    env = CueRecall()
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        policy.reset()
        done = False
        while not done:
            obs, reward, done, _, _ = env.step(policy.act(obs))
        assert reward == 1.0
