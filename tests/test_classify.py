"""The digit classifier: canvas, fixed split, IDX files, a short real training run, outputs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlagents.classify import ClassifyConfig, build_classifier, load_backbone_state, main, shift_images
from rlagents.digits import (CANVAS, DIGIT_SIZE, canvas_space, load_idx_digits, load_sklearn_digits, read_idx,
                             render_digits, sklearn_test_digits, split_indices, write_idx)
from rlagents.networks import ConvBackbone

SMALL = ["--set", "cnn_channels=16,32,32", "--set", "cnn_features=64", "--no-progress"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Path:
    """A short fixed-seed classifier run on load_digits with a smaller CNN (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("cls") / "run"
    assert main(["--run-dir", str(run_dir), "--seed", "0", "--set", "epochs=15", "--set", "lr=4.0e-3",
                 "--set", "ema=0.98", *SMALL]) == 0
    return run_dir


def test_canvas_is_uint8_channel_first_with_the_digit_centred():
    digits = load_sklearn_digits()
    assert digits.images.shape == (1797, 1, CANVAS, CANVAS) and digits.images.dtype == np.uint8
    assert canvas_space().contains(digits.images[0])
    top = (CANVAS - DIGIT_SIZE) // 2
    inside = digits.images[:, 0, top:top + DIGIT_SIZE, top:top + DIGIT_SIZE]
    assert digits.images.sum() == inside.sum()  # nothing outside the digit's square
    assert inside.max() == 255  # 16 (load_digits' maximum) maps to 255


def test_other_sizes_are_box_averaged_onto_the_same_square():
    big = np.kron(np.arange(64, dtype=np.float32).reshape(1, 8, 8) * 4, np.ones((4, 4)))  # 32×32 blocks
    small = np.arange(64, dtype=np.float32).reshape(1, 8, 8) * 4
    assert np.array_equal(render_digits(big, 255.0), render_digits(small, 255.0))


def test_split_is_fixed_by_seed_stratified_and_disjoint():
    labels = load_sklearn_digits().labels
    a, b, c = split_indices(labels, 0), split_indices(labels, 0), split_indices(labels, 1)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.test, c.test)
    parts = np.concatenate([a.train, a.val, a.test])
    assert len(parts) == len(labels) == len(np.unique(parts))
    share = np.bincount(labels[a.test], minlength=10) / np.bincount(labels, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.03)  # every class holds ~20% of its images out for the test
    images, test_labels = sklearn_test_digits(0)
    assert np.array_equal(test_labels, labels[a.test]) and len(images) == len(a.test)


def test_shift_augmentation_moves_whole_digits_without_cutting_them():
    images = torch.as_tensor(load_sklearn_digits().images[:50])
    shifted = shift_images(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # the margin keeps every stroke
    assert not torch.equal(shifted, images)
    assert shift_images(images, 0, torch.Generator()) is images


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "x", array, compress=compress)
    assert np.array_equal(read_idx(tmp_path / "x"), array)
    labels = np.arange(5, dtype=np.uint8)
    write_idx(tmp_path / "y", labels, compress=compress)
    assert np.array_equal(read_idx(tmp_path / "y"), labels)


def write_tiny_mnist(folder: Path, per_class: int = 10) -> None:
    """MNIST-format files made from load_digits, upscaled to 28×28 (train pair gzipped, t10k plain)."""
    digits = load_sklearn_digits()
    top = (CANVAS - DIGIT_SIZE) // 2
    pick = np.concatenate([np.flatnonzero(digits.labels == d)[:per_class] for d in range(10)])
    small = digits.images[pick, 0, top:top + DIGIT_SIZE, top:top + DIGIT_SIZE]
    big = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in small])
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte.gz", big[::2], compress=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", digits.labels[pick][::2], compress=True)
    write_idx(folder / "t10k-images-idx3-ubyte", big[1::2])
    write_idx(folder / "t10k-labels-idx1-ubyte", digits.labels[pick][1::2])


def test_idx_folder_loads_both_pairs_onto_the_canvas(tmp_path):
    write_tiny_mnist(tmp_path / "mnist")
    data = load_idx_digits(tmp_path / "mnist")
    assert data.images.shape == (100, 1, CANVAS, CANVAS) and data.images.dtype == np.uint8
    assert np.array_equal(np.bincount(data.labels), np.full(10, 10))


def test_classify_trains_on_idx_files(tmp_path):
    write_tiny_mnist(tmp_path / "mnist")
    run_dir = tmp_path / "run"
    assert main(["--data", str(tmp_path / "mnist"), "--run-dir", str(run_dir), "--set", "epochs=2", *SMALL]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"].startswith("idx:") and summary["n_train"] + summary["n_val"] + summary["n_test"] == 100


def test_short_run_reaches_a_real_accuracy(short_run: Path):
    summary = json.loads((short_run / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95, summary["test_accuracy"]
    assert summary["n_test"] == 360 and len(summary["history"]) == 15
    assert np.array(summary["confusion"]).sum() == 360


def test_run_directory_contents(short_run: Path):
    names = {p.name for p in short_run.iterdir()}
    assert {"config.yaml", "summary.json", "confusion.png", "backbone.safetensors", "backbone.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert Image.open(short_run / "confusion.png").size[0] >= 480
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(short_run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/train_loss", "charts/train_accuracy", "eval/val_loss", "eval/val_accuracy",
            "eval/test_accuracy"} <= tags
    assert len(events.Scalars("eval/val_accuracy")) == 15


def test_saved_backbone_gives_identical_features(short_run: Path):
    state = load_backbone_state(short_run)
    backbone = ConvBackbone(canvas_space(), (16, 32, 32), 64)
    backbone.load_state_dict(state)
    classifier = build_classifier(ClassifyConfig(cnn_channels=(16, 32, 32), cnn_features=64))
    classifier.backbone.load_state_dict(state)
    x = torch.as_tensor(sklearn_test_digits(0)[0][:20].copy())
    assert torch.equal(backbone(x), classifier.backbone(x))


def test_resolved_config_reproduces_the_run(short_run: Path, tmp_path):
    again = tmp_path / "again"
    assert main(["--config", str(short_run / "config.yaml"), "--run-dir", str(again), "--no-progress"]) == 0
    first = json.loads((short_run / "summary.json").read_text())
    second = json.loads((again / "summary.json").read_text())
    assert second["history"] == first["history"] and second["test_accuracy"] == first["test_accuracy"]


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/mnist"], "is not a folder"),
    (["--set", "epochs=0"], "epochs: bad value 0"),
    (["--set", "shift=5"], "shift: bad value 5"),
    (["--set", "ema=1"], "ema: bad value 1"),
    (["--set", "colour=red"], "unknown key 'colour'"),
    (["--set", "cnn_channels=8,8"], "three conv widths"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*args, "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "run").exists()  # nothing written


def test_bad_idx_files_are_refused(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(folder), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert exc.value.code == 2 and "bad magic number" in capsys.readouterr().err
    (folder / "train-images-idx3-ubyte").unlink()
    with pytest.raises(SystemExit):
        main(["--data", str(folder), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert "only half of the train pair" in capsys.readouterr().err
