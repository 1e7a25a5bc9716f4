"""Pure maths against hand-computed values: TD targets, n-step returns, prioritized replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlagents.agents.dqn import clip_grad_norm, next_state_values, td_targets
from rlagents.replay import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer, SumTree, nstep_return
from rlagents.schedules import ExponentialSchedule, LinearSchedule


def test_td_targets_stop_at_terminal_but_bootstrap_on_truncation():
    # Row 0: ordinary step. Row 1: terminated -> reward only. Row 2: truncated (time limit) -> stored with
    # terminated = 0, so it bootstraps like row 0.
    rewards = torch.tensor([1.0, 1.0, 1.0])
    next_v = torch.tensor([3.0, 3.0, 3.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    discounts = torch.full((3,), 0.5)
    assert torch.allclose(td_targets(rewards, next_v, terminated, discounts), torch.tensor([2.5, 1.0, 2.5]))


def test_td_targets_use_per_transition_discount_for_n_step():
    out = td_targets(torch.tensor([2.0]), torch.tensor([10.0]), torch.tensor([0.0]), torch.tensor([0.9 ** 3]))
    assert out.item() == pytest.approx(2.0 + 0.729 * 10.0)


def test_double_dqn_values_use_online_argmax_and_target_values():
    target_q = torch.tensor([[1.0, 5.0], [7.0, 2.0]])
    online_q = torch.tensor([[9.0, 0.0], [0.0, 9.0]])  # online prefers the other action in both rows
    assert torch.equal(next_state_values(target_q, None), torch.tensor([5.0, 7.0]))
    assert torch.equal(next_state_values(target_q, online_q), torch.tensor([1.0, 2.0]))


def test_clipped_double_dqn_values_take_the_smaller_estimate_of_the_online_pick():
    target_q = torch.tensor([[1.0, 5.0], [7.0, 2.0]])
    online_q = torch.tensor([[9.0, 0.0], [0.0, 0.5]])  # picks 0 then 1; the online value is the smaller in row 2
    assert torch.equal(next_state_values(target_q, online_q, clipped=True), torch.tensor([1.0, 0.5]))


def test_nstep_return_by_hand():
    assert nstep_return([1.0, 2.0, 3.0], 0.5) == pytest.approx(1 + 0.5 * 2 + 0.25 * 3)
    assert nstep_return([], 0.9) == 0.0


def test_nstep_accumulator_emits_full_windows_then_flushes_on_termination():
    acc = NStepAccumulator(n_envs=1, n_step=3, gamma=0.5)
    out = []
    for t, r in enumerate([1.0, 2.0, 3.0, 4.0]):
        out += acc.push(0, f"s{t}", t, r, f"s{t + 1}", terminated=(t == 3), truncated=False)
    # window s0: 1 + .5*2 + .25*3, bootstraps from s3 with gamma^3, not terminal
    # (the last element is the next observation's action mask: none here)
    assert out[0] == ("s0", 0, pytest.approx(2.75), "s3", False, pytest.approx(0.125), None)
    assert out[1] == ("s1", 1, pytest.approx(2 + 1.5 + 1.0), "s4", True, pytest.approx(0.125), None)
    assert out[2] == ("s2", 2, pytest.approx(3 + 2.0), "s4", True, pytest.approx(0.25), None)
    assert out[3] == ("s3", 3, pytest.approx(4.0), "s4", True, pytest.approx(0.5), None)
    assert len(out) == 4 and not acc.pending[0]


def test_nstep_accumulator_truncation_flushes_without_terminal_flag():
    acc = NStepAccumulator(n_envs=2, n_step=5, gamma=1.0)
    acc.push(1, "a", 0, 1.0, "b", False, False)
    out = acc.push(1, "b", 0, 1.0, "c", terminated=False, truncated=True)
    assert [(o[0], o[2], o[3], o[4], o[5]) for o in out] == [("a", 2.0, "c", False, 1.0), ("b", 1.0, "c", False, 1.0)]
    assert acc.pending[0] == type(acc.pending[0])()  # the other env is untouched


def test_replay_ring_buffer_wraps_and_samples_only_filled_slots():
    buf = ReplayBuffer(4, (2,), np.float32)
    for i in range(6):
        buf.add(np.full(2, i), i % 2, float(i), np.full(2, i + 1), False, 0.9)
    assert len(buf) == 4 and buf.pos == 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0]
    batch = buf.sample(100, np.random.default_rng(0))
    assert set(batch.rewards.tolist()) <= {2.0, 3.0, 4.0, 5.0}
    assert np.all(batch.next_obs[:, 0] == batch.obs[:, 0] + 1)


def test_sum_tree_totals_and_prefix_search():
    tree = SumTree(5)  # rounds up to 8 leaves
    tree.update(np.arange(5), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total == 10.0
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.9, 3.0, 5.9, 6.0, 9.99])).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    tree.update(np.array([3, 3]), np.array([1.0, 1.0]))  # duplicate indices are fine
    assert tree.total == 7.0


def test_prioritized_sampling_follows_priorities_and_weights_correct_bias():
    buf = PrioritizedReplayBuffer(4, (1,), np.float32, alpha=1.0, eps=0.0)
    for i in range(4):
        buf.add(np.array([i]), 0, 0.0, np.array([i]), False, 1.0)
    buf.update_priorities(np.arange(4), np.array([1.0, 1.0, 1.0, 5.0]))
    rng = np.random.default_rng(0)
    counts = np.zeros(4)
    for _ in range(400):
        batch = buf.sample(8, rng, beta=1.0)
        np.add.at(counts, batch.indices, 1)
    assert counts[3] / counts.sum() == pytest.approx(5 / 8, abs=0.03)
    batch = buf.sample(64, rng, beta=1.0)
    # w_i = (N P_i)^-1 / max: the frequent item gets 1/5 of the rare items' weight
    by_index = dict(zip(batch.indices.tolist(), batch.weights.tolist()))
    assert by_index[3] == pytest.approx(0.2) and by_index[0] == pytest.approx(1.0)


def test_new_transitions_get_max_priority():
    buf = PrioritizedReplayBuffer(8, (1,), np.float32, alpha=1.0, eps=0.0)
    buf.add(np.zeros(1), 0, 0.0, np.zeros(1), False, 1.0)
    buf.update_priorities(np.array([0]), np.array([3.0]))
    buf.add(np.zeros(1), 0, 0.0, np.zeros(1), False, 1.0)
    assert buf.tree.priorities(np.array([1]))[0] == 3.0


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 3))
    (a.sum() * 7 + (b ** 2).sum() * 3).backward()
    ref = [p.grad.clone() for p in (a, b)]
    norm = clip_grad_norm([a.grad, b.grad], 1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.zeros(1))], 1.0)  # API sanity
    total = torch.sqrt(sum((g ** 2).sum() for g in ref))
    assert norm.item() == pytest.approx(total.item(), rel=1e-5) and ref_norm.item() == 0.0
    assert torch.sqrt(a.grad.pow(2).sum() + b.grad.pow(2).sum()).item() == pytest.approx(1.0, rel=1e-4)


def test_schedules():
    lin = LinearSchedule(1.0, 0.1, 10)
    assert [lin(s) for s in (0, 5, 10, 99)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    exp = ExponentialSchedule(1.0, 0.0, 0.5)
    assert exp(2) == pytest.approx(0.25)
