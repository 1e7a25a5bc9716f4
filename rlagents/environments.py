"""Creating environments, stepping them as a vector, and greedy evaluation.

`SyncVecEnv` is a `gymnasium.vector.VectorEnv` with same-step autoreset, kept lean because on small envs the
vector wrapper, not the env, dominates the per-step cost (Gymnasium's `SyncVectorEnv` adds ~12 µs per step
on this CPU, more than CartPole's own step). When an episode ends, the returned observation is the reset
one and `infos["final_obs"][i]` holds the real last observation, as in Gymnasium's SAME_STEP mode.

With `record_episodes=True` it also remembers how each env's current episode began (the seed, or the state of
the env's `np_random` just before its reset) and the actions taken since, so that a resumed run can rebuild
the episodes in flight by replaying them (`episode_snapshot` / `restore_episodes`): Gymnasium has no general
way to snapshot an env, but every env whose randomness comes from its `np_random` is a deterministic function
of that generator and the actions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from rlagents import envspec
from rlagents import obs as batches
from rlagents.envspec import EnvSpec, as_env_spec
from rlagents.errors import TrainingFault, UserError, one_line
from rlagents.masks import FINAL_MASK_KEY, MASK_KEY, as_mask, env_provides_masks, illegal_count, obs_mask_space


def _register_project_envs(atari: bool = True) -> None:
    import envs  # noqa: F401  (importing registers our own envs)

    if atari:
        _register_atari_envs()


def _register_atari_envs() -> None:
    """Importing ale_py registers the `ALE/` ids (its ROMs ship with the wheel)."""
    try:
        import ale_py
    except ImportError:  # a dependency, but keep the rest of the suite usable without it
        return
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner on stderr for every game loaded


def is_atari(env_id: str) -> bool:
    """Whether `env_id` is an Arcade Learning Environment game (`ALE/Pong-v5`, ...)."""
    return env_id.startswith("ALE/")


def known_env_ids() -> list[str]:
    _register_project_envs()
    return sorted(gym.registry)


# Standard DQN preprocessing (Mnih et al. 2015; Machado et al. 2018): up to 30 no-ops at reset, the action
# repeated for 4 frames with a max over the last two, 84×84 grayscale, a stack of the last 4 frames.
ATARI_NOOP_MAX = 30
ATARI_FRAME_SKIP = 4
ATARI_SCREEN = 84
ATARI_STACK = 4


class EpisodicLife(gym.Wrapper):
    """Training only: losing a life ends the episode (terminated) for the agent, but the game goes on.

    Gymnasium's `AtariPreprocessing(terminal_on_life_loss=True)` would make the next `reset()` restart the
    whole game, so an agent would only ever see its first life; here a reset after a lost life takes one
    no-op step instead and the game restarts only when it is really over (as in DeepMind's and SB3's
    `EpisodicLifeEnv`).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


def clip_reward(reward: float) -> float:
    """The sign of a reward (−1, 0, +1): games score on very different scales, one learning rate fits all."""
    return float(np.sign(reward))


def wrap_atari(env: gym.Env, *, training: bool) -> gym.Env:
    """Apply the standard DQN preprocessing to an ALE env created with `frameskip=1`; observations become
    uint8 stacks of shape (4, 84, 84). `training` adds, as in Nature DQN, the end of an episode at each lost
    life and rewards clipped to their sign; evaluation envs play whole games and report real scores."""
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation, TransformReward

    env = AtariPreprocessing(env, noop_max=ATARI_NOOP_MAX, frame_skip=ATARI_FRAME_SKIP, screen_size=ATARI_SCREEN,
                             terminal_on_life_loss=False, grayscale_obs=True)
    if training:
        env = TransformReward(EpisodicLife(env), clip_reward)
    # padding "reset" repeats the first frame of an episode: what the frame replay buffer rebuilds
    return FrameStackObservation(env, ATARI_STACK, padding_type="reset")


def make_env(env: str | EnvSpec, *, render_mode: str | None = None, training: bool = False,
             **kwargs: Any) -> gym.Env:
    """Create `env` (an id, or an `EnvSpec` with kwargs and modules) with our envs registered; an unknown
    id is a one-line error naming close matches, and anything the env's own code raises is one line too.

    Atari ids (`ALE/...`) get the standard DQN preprocessing (`wrap_atari`): the ALE's own frame skip is
    replaced by the wrapper's (frameskip=1 here), its sticky actions (v5: repeat_action_probability 0.25)
    are kept. `training` envs of Atari games end an episode at each lost life; evaluation envs do not.
    """
    spec = as_env_spec(env)
    env_id = spec.id
    atari = is_atari(env_id)
    _register_project_envs(atari=atari)
    creator = spec.creator()
    if not isinstance(creator, str):  # a factory function: nothing to look up
        return envspec.create(spec, creator, {"render_mode": render_mode, **kwargs})
    env_id = creator
    if atari:
        kwargs.setdefault("frameskip", 1)
    else:
        if env_id not in gym.registry:
            _register_atari_envs()  # so that close matches include the ALE ids
        found = gym.registry.get(env_id)
        if found is not None and str(found.entry_point).startswith("ale_py"):  # Pong-v4, PongNoFrameskip-v4
            game = env_id.split("NoFrameskip")[0].split("Deterministic")[0].split("-")[0]
            raise UserError(f"legacy Atari id {env_id!r}: use ALE/{game}-v5 (ALE/ ids get the standard "
                            f"preprocessing and the ALE/* config entry)")
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, gym.registry.keys(), n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else "see `python -m rlagents.train --list-envs`"
        raise UserError(f"unknown env {env_id!r}; {hint} (an env of your own: --env package.module:EnvId-v0)")
    made = envspec.create(spec, env_id, {"render_mode": render_mode, **kwargs})
    return wrap_atari(made, training=training) if atari else made


def provides_masks(env: str | EnvSpec) -> bool:
    """Whether `env` gives action masks (`rlagents.masks`)."""
    env = make_env(env)
    try:
        return env_provides_masks(env)
    finally:
        env.close()


def is_project_env(env_id: str) -> bool:
    """Whether `env_id` is one of our own envs (registered by the `envs` package)."""
    _register_project_envs(atari=False)
    spec = gym.registry.get(env_id)
    entry = getattr(spec, "entry_point", None)
    module = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return module == "envs" or module.startswith("envs.")


def check_env(env: str | EnvSpec) -> None:
    """Run Gymnasium's env checker on a fresh `env`; a failure is a one-line UserError."""
    from gymnasium.utils.env_checker import check_env as gymnasium_check_env

    made = make_env(env)
    try:
        gymnasium_check_env(made.unwrapped, skip_render_check=True)
    except Exception as exc:  # the checker raises assorted types; all mean the env breaks the API
        raise UserError(f"env {as_env_spec(env).id!r} fails Gymnasium's env checker: {exc}") from None
    finally:
        made.close()


class SyncVecEnv(gym.vector.VectorEnv):
    """Steps `len(env_fns)` envs in turn, with same-step autoreset and preallocated batch arrays."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], *, record_episodes: bool = False,
                 label: str | None = None):
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        first = self.envs[0]
        self.metadata = dict(first.metadata, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.render_mode = first.render_mode
        self.spec = first.spec
        self.label = label or (first.spec.id if first.spec is not None else type(first.unwrapped).__name__)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(first.observation_space, self.num_envs)
        self.action_space = batch_space(first.action_space, self.num_envs)
        self._plain_obs = isinstance(first.observation_space, (gym.spaces.Box, gym.spaces.Discrete))
        self._obs = create_empty_array(first.observation_space, self.num_envs)
        self.record_episodes = record_episodes
        self._episode_starts: list[dict[str, Any] | None] = [None] * self.num_envs
        self._episode_actions: list[list] = [[] for _ in range(self.num_envs)]
        # action masks (rlagents.masks): those of the current observations, kept here for `action_masks()`
        self.masked = env_provides_masks(first)
        self._masks_in_obs = obs_mask_space(first.observation_space)
        self._masks = np.ones((self.num_envs, int(first.action_space.n)), dtype=bool) if self.masked else None

    def action_masks(self) -> np.ndarray | None:
        """Masks (envs × actions, bool) of the current observations, or None for envs that give none."""
        return None if self._masks is None else self._masks.copy()

    def _mask_of(self, obs: Any, info: dict) -> np.ndarray:
        value = obs[MASK_KEY] if self._masks_in_obs else (info or {}).get(MASK_KEY)
        n = self._masks.shape[1]
        return np.ones(n, dtype=bool) if value is None else as_mask(value, n)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else (
            seed if seed is not None else [None] * self.num_envs)
        observations = []
        for i, (env, s) in enumerate(zip(self.envs, seeds)):
            if self.record_episodes:
                self._note_episode_start(i, s, replayable=options is None)
            try:
                obs, info = env.reset(seed=s, options=options)
            except Exception as exc:  # noqa: BLE001 (an env's own code can raise anything)
                raise TrainingFault(f"env {self.label!r} (copy {i}): reset(seed={s}) raised "
                                    f"{type(exc).__name__}: {one_line(exc)}") from exc
            if self.masked:
                self._masks[i] = self._mask_of(obs, info)
            observations.append(obs)
        return self._stack(observations), {}

    def _note_episode_start(self, i: int, seed: int | None, *, replayable: bool = True) -> None:
        # A reset with options cannot be replayed (options are arbitrary objects): it is marked unknown (None).
        if not replayable:
            start = None
        else:
            start = {"seed": seed} if seed is not None else {"rng": self.envs[i].np_random.bit_generator.state}
        self._episode_starts[i] = start
        self._episode_actions[i] = []

    def _stack(self, observations: list) -> Any:
        if self._plain_obs:
            for i, o in enumerate(observations):
                self._obs[i] = o
            return self._obs.copy()
        return concatenate(self.single_observation_space, observations, create_empty_array(
            self.single_observation_space, self.num_envs))

    def step(self, actions):
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        observations = []
        infos: dict[str, Any] = {}
        record = self.record_episodes
        if record and isinstance(actions, np.ndarray) and actions.ndim > 1:
            actions = actions.copy()  # rows are kept in the episode record: no views of the caller's array
        i = 0
        try:  # free in Python 3.11+ unless something raises
            for i, env in enumerate(self.envs):
                action = actions[i]
                obs, rewards[i], terminated[i], truncated[i], info = env.step(action)
                if record:
                    self._episode_actions[i].append(action)
                if terminated[i] or truncated[i]:
                    if "final_obs" not in infos:
                        infos["final_obs"] = np.empty(self.num_envs, dtype=object)
                        infos["_final_obs"] = np.zeros(self.num_envs, dtype=bool)
                    infos["final_obs"][i] = obs
                    infos["_final_obs"][i] = True
                    if info and "is_success" in info:  # goal envs' convention (Gymnasium-Robotics, SB3)
                        _note_success(infos, i, self.num_envs, info["is_success"])
                    if self.masked:
                        self._note_final_mask(infos, i, self._mask_of(obs, info))
                    if record:
                        self._note_episode_start(i, None)
                    obs, info = env.reset()
                if self.masked:
                    self._masks[i] = self._mask_of(obs, info)
                observations.append(obs)
        except Exception as exc:  # noqa: BLE001 (an env's own code can raise anything)
            raise TrainingFault(f"env {self.label!r} (copy {i}): step, or the reset after an episode end, raised "
                                f"{type(exc).__name__}: {one_line(exc)}") from exc
        return self._stack(observations), rewards, terminated, truncated, infos

    def _note_final_mask(self, infos: dict, i: int, mask: np.ndarray) -> None:
        if FINAL_MASK_KEY not in infos:
            infos[FINAL_MASK_KEY] = np.ones_like(self._masks)
            infos[f"_{FINAL_MASK_KEY}"] = np.zeros(self.num_envs, dtype=bool)
        infos[FINAL_MASK_KEY][i] = mask
        infos[f"_{FINAL_MASK_KEY}"][i] = True

    def episode_snapshot(self) -> dict[str, Any]:
        """How each env's current episode began and the actions since, as checkpointable arrays and values."""
        if not self.record_episodes:
            raise RuntimeError("episode_snapshot needs SyncVecEnv(record_episodes=True)")
        space = self.single_action_space
        return {"starts": [dict(start) if start is not None else {} for start in self._episode_starts],
                "actions": [np.asarray(a, dtype=space.dtype).reshape(len(a), *space.shape)
                            for a in self._episode_actions]}

    def restore_episodes(self, snapshot: dict[str, Any], expected_obs: Any, fallback_seed: int
                         ) -> tuple[Any, np.ndarray]:
        """Rebuild the episodes of `snapshot` by replaying them, checking each against `expected_obs`.

        An env whose replay does not reproduce its saved observation exactly (its randomness lives outside
        `np_random`, e.g. an emulator's own RNG; or the snapshot is from a different number of envs) starts
        a new episode seeded from `fallback_seed` instead. Returns the observations and a mask of the envs
        that were restored.
        """
        starts, actions = snapshot.get("starts", []), snapshot.get("actions", [])
        restored = np.zeros(self.num_envs, dtype=bool)
        observations = []
        for i, env in enumerate(self.envs):
            obs, info = None, {}
            if i < len(starts) and len(starts) == self.num_envs and starts[i]:
                obs, info = self._replay(i, starts[i], np.asarray(actions[i]))
                restored[i] = obs is not None and _same_obs(obs, batches.take(expected_obs, i))
            if not restored[i]:
                if self.record_episodes:
                    self._note_episode_start(i, fallback_seed + i)
                obs, info = env.reset(seed=fallback_seed + i)
            if self.masked:
                self._masks[i] = self._mask_of(obs, info)
            observations.append(obs)
        return self._stack(observations), restored

    def _replay(self, i: int, start: dict[str, Any], actions: np.ndarray) -> tuple[Any, dict]:
        """The observation and info the replayed episode has reached, or (None, {}) where replay failed."""
        env = self.envs[i]
        try:
            if "rng" in start:
                generator = np.random.Generator(getattr(np.random, start["rng"]["bit_generator"])())
                generator.bit_generator.state = start["rng"]
                env.np_random = generator
                obs, info = env.reset()
            else:
                obs, info = env.reset(seed=int(start["seed"]))
            for action in actions:
                obs, _, terminated, truncated, info = env.step(action)
                if terminated or truncated:  # the saved episode was still running: this is not it
                    return None, {}
        except Exception:  # a start record this env cannot take is a failed replay, not a crash
            return None, {}
        if self.record_episodes:
            self._episode_starts[i] = dict(start)
            self._episode_actions[i] = list(actions)
        return obs, info

    def render(self):
        return self.envs[0].render()

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


EVAL_STEP_CAP = 10_000


def make_vec_env(env: str | EnvSpec, n_envs: int, *, render_mode: str | None = None,
                 step_cap: int | None = None, training: bool = False,
                 record_episodes: bool = False) -> SyncVecEnv:
    """A vector of `n_envs` copies of `env` (`training`: see `make_env`; `record_episodes`: see
    `SyncVecEnv`).

    `step_cap` adds a time limit to envs registered without one (CliffWalking, say), so that evaluating a
    greedy policy that loops forever ends, as a truncated episode, instead of hanging.
    """
    # ALE games truncate themselves (v5: 108,000 frames; a TimeLimit here would count raw frames), and an
    # ALE env is slow to create (it loads the game): no probe for them
    spec = as_env_spec(env)
    limit = None
    if not is_atari(spec.id):
        probe = make_env(spec, render_mode=render_mode)  # fail fast, with a clean error, on a bad id
        limit = _time_limit(probe)
        probe.close()
    capped = step_cap is not None and limit is None and not is_atari(spec.id)
    kwargs = {"max_episode_steps": step_cap} if capped else {}
    return SyncVecEnv([lambda: make_env(spec, render_mode=render_mode, training=training, **kwargs)
                       for _ in range(n_envs)], record_episodes=record_episodes, label=spec.id)


def _time_limit(env: gym.Env) -> int | None:
    """The env's episode step limit: its registration's, or that of a TimeLimit a factory wrapped it in."""
    if env.spec is not None and env.spec.max_episode_steps is not None:
        return env.spec.max_episode_steps
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env._max_episode_steps
        env = env.env
    return None


def _same_obs(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_obs(a[k], b[k]) for k in a)
    return np.array_equal(np.asarray(a), np.asarray(b))


def _note_success(infos: dict, i: int, n: int, value: Any) -> None:
    """Record in a vector step's `infos` that env `i`'s episode ended with `info["is_success"] == value`:
    `infos["is_success"]` (bool per env) and its mask `infos["_is_success"]`, set only for episodes that
    ended with that key."""
    if "is_success" not in infos:
        infos["is_success"] = np.zeros(n, dtype=bool)
        infos["_is_success"] = np.zeros(n, dtype=bool)
    infos["is_success"][i] = bool(np.asarray(value).any())
    infos["_is_success"][i] = True


def final_observations(next_obs: Any, done: np.ndarray, infos: dict) -> Any:
    """The real next observations of a step: reset observations replaced by final ones where done."""
    out = batches.copy(next_obs)
    for i in np.flatnonzero(done):
        batches.put(out, i, infos["final_obs"][i])
    return out


def evaluate(policy: Callable[..., np.ndarray], envs: gym.vector.VectorEnv, n_episodes: int,
             seed: int, counts: dict[str, Any] | None = None,
             reset: Callable[[np.ndarray | None], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run `n_episodes` episodes of `policy` over `envs` in parallel; returns (returns, lengths).

    Each env slot runs a fixed share of the episodes (not "first n to finish", which would favour short
    episodes), and seeding the vector with `seed` makes the episode set the same for every agent. Envs that
    give action masks (`rlagents.masks`) call `policy(obs, masks)`, others `policy(obs)`; for them `counts`, if
    given, receives the number of actions taken that the masks forbid (`illegal_actions`). Envs whose episodes
    end with `info["is_success"]` (the goal envs' convention) put the fraction of those episodes that
    succeeded in `counts` as `success_rate`; other envs add nothing. `reset(starts)`, if
    given, is told which envs begin an episode (an agent's `reset_memory`: a recurrent policy's hidden state
    starts afresh with each episode).
    """
    n = envs.num_envs
    quota = np.full(n, n_episodes // n)
    quota[: n_episodes % n] += 1
    returns, lengths = [], []
    ep_return = np.zeros(n)
    ep_length = np.zeros(n, dtype=np.int64)
    done_count = np.zeros(n, dtype=np.int64)
    obs, _ = envs.reset(seed=seed)
    if reset is not None:
        reset(None)
    masked = getattr(envs, "masked", False)
    illegal = 0
    successes: list[bool] = []  # of the ended episodes that reported info["is_success"]
    while (done_count < quota).any():
        masks = envs.action_masks() if masked else None
        actions = policy(obs) if masks is None else policy(obs, masks)
        active = done_count < quota
        if masks is not None:
            illegal += illegal_count(masks[active], np.asarray(actions)[active], envs.single_action_space.start)
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        if "_is_success" in infos:
            reported = infos["_is_success"] & active
            successes.extend(bool(v) for v in infos["is_success"][reported])
        if reset is not None and (terminated | truncated).any():
            reset(terminated | truncated)
        ep_return += rewards * active
        ep_length += active
        for i in np.flatnonzero((terminated | truncated) & active):
            returns.append(ep_return[i])
            lengths.append(ep_length[i])
            done_count[i] += 1
            ep_return[i], ep_length[i] = 0.0, 0
    if counts is not None and masked:
        counts["illegal_actions"] = illegal
    if counts is not None and successes:
        counts["success_rate"] = float(np.mean(successes))
    return np.asarray(returns, dtype=np.float64), np.asarray(lengths, dtype=np.int64)
