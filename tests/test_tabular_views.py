"""What `rlagents.evaluate` shows of a Q-table: policy arrows on grid maps, greedy paths, heat maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rlagents.environments import make_env
from rlagents.tabular_views import colour, describe_table, greedy_path


def test_frozenlake_policy_arrows_keep_holes_and_goal(tmp_path: Path):
    q = np.zeros((16, 4))
    q[:, 2] = 1.0  # always right (FrozenLake: 0 left, 1 down, 2 right, 3 up)
    lines = describe_table(q, make_env("FrozenLake-v1"), tmp_path)
    assert lines[:5] == ["greedy policy:", "  → → → →", "  → H → H", "  → → → H", "  H → → G"]
    assert not any("greedy path" in line for line in lines)  # slippery: no single path
    image = Image.open(tmp_path / "values.png")
    assert image.width >= 4 * 16 and image.format == "PNG"


def test_cliffwalking_greedy_path_and_loops():
    env = make_env("CliffWalking-v1")
    q = np.zeros((48, 4))
    q[:, 1] = 1.0  # right everywhere (CliffWalking: 0 up, 1 right, 2 down, 3 left): the first step falls off
    path = greedy_path(q, env)
    assert path[0] == 36 and path[-1] == 36 and len(path) == 2  # back at the start: a loop, reported once
    q[36] = [1.0, 0.0, 0.0, 0.0]  # up from the start, then right along row 2, then down into the goal
    q[35] = [0.0, 0.0, 1.0, 0.0]
    path = greedy_path(q, env)
    assert path == [36] + list(range(24, 36)) + [47]


def test_heat_maps_for_discretised_and_other_tables(tmp_path: Path):
    cartpole = make_env("CartPole-v1")
    lines = describe_table(np.random.default_rng(0).random((72, 2)), cartpole, tmp_path, bins=(1, 1, 6, 12))
    assert lines == [f"value heat map: {tmp_path / 'values.png'}"]
    small = Image.open(tmp_path / "values.png").convert("RGB")
    taxi = tmp_path / "taxi"
    describe_table(np.zeros((500, 6)), make_env("Taxi-v4"), taxi)
    assert (taxi / "values.png").is_file()
    assert small.getpixel((1, 1)) != (255, 255, 255)


def test_colour_ramp_ends():
    rgb = colour(np.array([[0.0, 0.5, 1.0]]))
    assert rgb[0, 0].tolist() == [68, 1, 84] and rgb[0, 2].tolist() == [253, 231, 37]
    assert colour(np.ones((2, 2))).shape == (2, 2, 3)  # a constant table does not divide by zero
