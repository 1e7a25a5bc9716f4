"""`python -m rlagents.classify`: train the CNN backbone + a linear head on handwritten digits.

Default data is scikit-learn's `load_digits`; `--data FOLDER` reads MNIST IDX files instead. Digits are drawn
on the canvas the `DigitLock-v0` env uses (`rlagents.digits`), split by `split_seed` into fixed, stratified
train / validation / test parts; the epoch with the best validation accuracy is kept and scored once on the
test part. The run directory gets the resolved `config.yaml`, TensorBoard events, `backbone.safetensors` +
`backbone.json` (backbone and head weights, safe format of `rlagents.checkpoint`), `summary.json` and
`confusion.png`.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from rlagents.checkpoint import atomic_write_json, atomic_write_text, library_versions, read_checkpoint, save_checkpoint
from rlagents.cli import ArgumentParser, default_config_path, seed_arg
from rlagents.config import MAX_TORCH_THREADS, build, param, parse_overrides, read_config_file
from rlagents.digits import N_CLASSES, Digits, Split, canvas_space, load_idx_digits, load_sklearn_digits, split_indices
from rlagents.errors import ConfigError, UserError, cli_entry
from rlagents.networks import ConvBackbone, Net
from rlagents.paths import check_output_dir
from rlagents.threads import set_cpu_threads
from rlagents.progress import EpochProgress
from rlagents.runlock import is_empty_run_dir, run_lock
from rlagents.validate import SEED_MAX, check_seed

RUNS_DIR = Path("runs")
WEIGHTS = "backbone"  # <run>/backbone.safetensors + backbone.json


@dataclass
class ClassifyConfig:
    """Classifier hyperparameters. The CNN widths must match the agent's config for the backbone to transfer."""

    epochs: int = param(60, "passes over the training part", low=1)
    batch_size: int = param(32, "images per gradient step", low=1)
    lr: float = param(2.0e-3, "peak AdamW learning rate (cosine-decayed to zero)", low=0.0, low_open=True)
    weight_decay: float = param(0.0, "AdamW weight decay", low=0.0)
    ema: float = param(0.995, "decay per step of the moving average of weights that is validated and saved "
                       "(0 = the raw weights)", low=0.0, high=0.9999)
    shift: int = param(1, "augmentation: random shifts of up to this many pixels each way (0 = none)", low=0, high=2)
    split_seed: int = param(0, "seed of the train/validation/test split (DigitLock-v0 uses split_seed 0)", low=0,
                            high=SEED_MAX)
    val_fraction: float = param(0.15, "share of the images held out for validation", low=0.0, high=0.5,
                                low_open=True)
    test_fraction: float = param(0.2, "share of the images held out for the test", low=0.0, high=0.5, low_open=True)
    cnn_channels: tuple[int, ...] = param((32, 64, 64), "conv widths of the CNN backbone", low=1)
    cnn_features: int = param(256, "width of the CNN backbone's dense layer", low=1)
    torch_threads: int = param(1, "torch CPU threads", low=1, high=MAX_TORCH_THREADS)

    def validate(self) -> None:
        if len(self.cnn_channels) != 3:
            raise ConfigError(f"cnn_channels: the CNN takes three conv widths, got {self.cnn_channels}")


# ---------------------------------------------------------------- training


def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Move each image (B, C, H, W) by a random whole-pixel offset in [-max_shift, max_shift]², zero-filled.

    The canvas margin is at least `max_shift` (see `rlagents.digits`), so strokes are never cut off.
    """
    if max_shift == 0:
        return images
    b, _, h, w = images.shape
    offsets = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator)
    padded = nn.functional.pad(images, (max_shift,) * 4)
    out = torch.empty_like(images)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, max_shift - dy:max_shift - dy + h, max_shift - dx:max_shift - dx + w]
    return out


def build_classifier(config: ClassifyConfig) -> Net:
    """The CNN backbone every image agent uses, plus a linear head over the ten digits."""
    backbone = ConvBackbone(canvas_space(), tuple(config.cnn_channels), config.cnn_features)
    return Net(backbone, nn.Linear(backbone.features_dim, N_CLASSES))


@torch.no_grad()
def predict(net: Net, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """Predicted digit of each image (N, 1, H, W) uint8."""
    net.eval()
    out = [net(torch.as_tensor(images[i:i + batch])).argmax(1) for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """counts[true, predicted] over the ten digits."""
    counts = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


@dataclass
class TrainResult:
    """What training produced: the best-validation network and its numbers."""

    net: Net
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    confusion: np.ndarray
    history: list[dict[str, float]]


def train_classifier(data: Digits, split: Split, config: ClassifyConfig, seed: int, *, writer: Any = None,
                     progress: EpochProgress | None = None) -> TrainResult:
    """Train with Adam on the training part; keep the epoch with the best validation accuracy; score the test."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = build_classifier(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # Cosine decay to zero: large steps early, a settled network at the end.
    steps_per_epoch = -(-len(split.train) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    x_train = torch.as_tensor(data.images[split.train])
    y_train = torch.as_tensor(data.labels[split.train])
    x_val, y_val = data.images[split.val], data.labels[split.val]
    # An exponential moving average of the weights smooths out the last steps' noise, which otherwise makes
    # test accuracy vary by a few digits from seed to seed; it is what is validated, kept and saved.
    averaged = copy.deepcopy(net) if config.ema > 0 else net
    params, avg_params = list(net.parameters()), list(averaged.parameters())
    best_state, best_epoch, best_val = copy.deepcopy(averaged.state_dict()), 0, -1.0
    history = []
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            x = shift_images(x_train[idx], config.shift, generator)
            logits = net(x)
            loss = nn.functional.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if averaged is not net:
                with torch.no_grad():
                    for avg, param_ in zip(avg_params, params):
                        avg.lerp_(param_, 1.0 - config.ema)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        with torch.no_grad():
            averaged.eval()
            val_logits = averaged(torch.as_tensor(x_val))
            val_loss = float(nn.functional.cross_entropy(val_logits, torch.as_tensor(y_val)))
            val_acc = float((val_logits.argmax(1).numpy() == y_val).mean())
        row = {"epoch": epoch, "train_loss": loss_sum / len(order), "train_accuracy": correct / len(order),
               "val_loss": val_loss, "val_accuracy": val_acc}
        history.append(row)
        if writer is not None:
            writer.add_scalar("losses/train_loss", row["train_loss"], epoch)
            writer.add_scalar("charts/train_accuracy", row["train_accuracy"], epoch)
            writer.add_scalar("eval/val_loss", val_loss, epoch)
            writer.add_scalar("eval/val_accuracy", val_acc, epoch)
        if progress is not None:
            progress.update(epoch, row["train_loss"], row["train_accuracy"], val_acc)
        if val_acc >= best_val:  # ties go to the later, longer-trained epoch
            best_state, best_epoch, best_val = copy.deepcopy(averaged.state_dict()), epoch, val_acc
    net.load_state_dict(best_state)
    test_pred = predict(net, data.images[split.test])
    test_labels = data.labels[split.test]
    return TrainResult(net, best_epoch, best_val, float((test_pred == test_labels).mean()),
                       confusion_matrix(test_labels, test_pred), history)


def load_backbone_state(path: Path) -> dict[str, torch.Tensor]:
    """The backbone `state_dict` from a classifier run's `backbone.json` (or the run directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / f"{WEIGHTS}.json"
    state, _ = read_checkpoint(path, agent="classify")
    return state["backbone"]


# ---------------------------------------------------------------- command line


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.classify", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="config YAML (default: configs/classify.yaml); a run's "
                   "config.yaml reproduces that run")
    p.add_argument("--data", type=Path, help="folder with MNIST IDX files (train-/t10k-images-idx3-ubyte and "
                   "-labels-idx1-ubyte, optionally .gz); default: scikit-learn's load_digits")
    p.add_argument("--seed", type=seed_arg(), help="seed of initialisation, shuffling and augmentation (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, typed by its field (repeatable)")
    p.add_argument("--run-dir", help="output folder (default: runs/digits__classify__<seed>__<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve_config(args) -> tuple[ClassifyConfig, dict[str, Any]]:
    """Dataclass defaults → the file's `default:` entry → `--set`; returns the config and the file's `run:`."""
    path = args.config or default_config_path("classify")
    data = read_config_file(path) if args.config is not None or path.is_file() else {}
    unknown = set(data) - {"run", "default"}
    if unknown:
        raise ConfigError(f"{path}: unknown entries {sorted(unknown)}; a classify config has run: and default:")
    values = dict(data.get("default") or {})
    values.update(parse_overrides(args.overrides))
    return build(ClassifyConfig, values, source=str(path)), dict(data.get("run") or {})


def dump_config(config: ClassifyConfig, *, seed: int, data: str | None) -> str:
    """YAML of the resolved config; `--config` on it reproduces the run."""
    entry = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    doc = {"run": {"seed": seed, "data": data}, "default": entry}
    return ("# Resolved config of an rlagents classifier run. Reproduce it with:\n"
            "#   python -m rlagents.classify --config <this file>\n" + yaml.safe_dump(doc, sort_keys=False))


@cli_entry
def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    args = build_parser().parse_args(argv)
    config, run_meta = resolve_config(args)
    seed = check_seed(args.seed if args.seed is not None else run_meta.get("seed", 0))
    data_path = args.data if args.data is not None else (Path(run_meta["data"]) if run_meta.get("data") else None)
    run_dir = check_output_dir(args.run_dir if args.run_dir is not None else
                               RUNS_DIR / f"digits__classify__{seed}__{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}")
    if not is_empty_run_dir(run_dir):
        raise UserError(f"run directory {run_dir} already exists and is not empty; choose another --run-dir")
    data = load_idx_digits(data_path) if data_path is not None else load_sklearn_digits()
    split = split_indices(data.labels, config.split_seed, config.val_fraction, config.test_fraction)
    set_cpu_threads(config.torch_threads)

    from torch.utils.tensorboard import SummaryWriter  # slow import: only once the input is valid

    with run_lock(run_dir):  # one process at a time in a run directory
        if not is_empty_run_dir(run_dir):  # another process wrote it since the check above
            raise UserError(f"run directory {run_dir} already exists and is not empty; choose another --run-dir")
        atomic_write_text(run_dir / "config.yaml",
                          dump_config(config, seed=seed, data=str(data_path) if data_path else None))
        writer = SummaryWriter(log_dir=str(run_dir))
        progress = EpochProgress(f"classify s{seed}", config.epochs, not args.no_progress)
        try:
            result = train_classifier(data, split, config, seed, writer=writer, progress=progress)
        finally:
            progress.close()
        writer.add_scalar("eval/test_accuracy", result.test_accuracy, result.best_epoch)
        writer.close()

        net = result.net
        save_checkpoint(run_dir, WEIGHTS, {"backbone": net.backbone.state_dict(), "head": net.head.state_dict()},
                        {"agent": "classify", "env": data.source, "seed": seed,
                         "observation_space": repr(canvas_space()), "config": dataclasses.asdict(config),
                         "test_accuracy": result.test_accuracy})
        from rlagents.tabular_views import save_heatmap

        save_heatmap(result.confusion.astype(float), run_dir / "confusion.png",
                     f"test confusion: rows true, columns predicted; accuracy {result.test_accuracy:.4f}",
                     labels=result.confusion.astype(str), row_names=[str(d) for d in range(result.confusion.shape[0])],
                     col_names=[str(d) for d in range(result.confusion.shape[1])])
        wall = time.perf_counter() - start
        summary = {"data": data.source, "seed": seed, "split_seed": config.split_seed,
                   "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
                   "test_accuracy": result.test_accuracy, "val_accuracy": result.val_accuracy,
                   "best_epoch": result.best_epoch, "wall_time_s": round(wall, 2),
                   "confusion": result.confusion.tolist(), "history": result.history, "versions": library_versions()}
        atomic_write_json(run_dir / "summary.json", summary)
    print(f"classifier on {data.source} seed {seed}: test accuracy {result.test_accuracy:.4f} "
          f"({len(split.test)} images; best validation {result.val_accuracy:.4f} at epoch {result.best_epoch}) "
          f"in {wall:.1f} s. Run: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
