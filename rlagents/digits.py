"""Handwritten digits: loading, the fixed split, and the one canvas they are drawn on.

The classifier (`rlagents.classify`) and the `DigitLock-v0` env both draw digits with `render_digits`, so a
backbone trained as a classifier sees exactly the pixels the env shows: a uint8, channel-first
(1, CANVAS, CANVAS) image with the digit scaled to DIGIT_SIZE × DIGIT_SIZE in the middle. The empty
margin leaves room for the classifier's shift augmentation without cutting strokes off.

Data: scikit-learn's `load_digits` (shipped with the package, 1,797 images of 8×8, values 0–16), or
MNIST-format IDX files a user already has. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

from rlagents.errors import UserError
from rlagents.safeload import read_bounded

CANVAS = 12  # side of the square canvas, pixels
DIGIT_SIZE = 8  # side of the digit inside it (load_digits' native size, so its digits are not resampled)
N_CLASSES = 10
MAX_IDX_BYTES = 1 << 30  # MNIST's training images are 47 MB


def canvas_space() -> gym.spaces.Box:
    """The observation space of one rendered digit: uint8, channel-first (1, CANVAS, CANVAS)."""
    return gym.spaces.Box(0, 255, (1, CANVAS, CANVAS), np.uint8)


def render_digits(images: np.ndarray, max_value: float) -> np.ndarray:
    """Draw grey-scale digits (N, h, w), values 0..max_value, onto the canvas: (N, 1, CANVAS, CANVAS) uint8.

    Intensities are scaled to 0–255; digits of another size (MNIST's 28×28) are box-averaged down to
    DIGIT_SIZE × DIGIT_SIZE first; the digit is centred.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected a stack of 2-D images (N, h, w), got shape {images.shape}")
    scaled = np.clip(images * (255.0 / max_value), 0.0, 255.0)
    if scaled.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        scaled = np.stack([np.asarray(Image.fromarray(img, mode="F").resize((DIGIT_SIZE, DIGIT_SIZE), Image.BOX))
                           for img in scaled])
    out = np.zeros((len(images), 1, CANVAS, CANVAS), dtype=np.uint8)
    top = (CANVAS - DIGIT_SIZE) // 2
    out[:, 0, top:top + DIGIT_SIZE, top:top + DIGIT_SIZE] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------- sources


@dataclass
class Digits:
    """Rendered digits and their labels."""

    images: np.ndarray  # (N, 1, CANVAS, CANVAS) uint8
    labels: np.ndarray  # (N,) int64, 0–9
    source: str


def load_sklearn_digits() -> Digits:
    """scikit-learn's 1,797 digits (8×8, values 0–16), rendered onto the canvas."""
    from sklearn.datasets import load_digits  # slow import: only when digits are needed

    data = load_digits()
    return Digits(render_digits(data.images, 16.0), data.target.astype(np.int64), "sklearn-digits")


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format; gzipped or not) of unsigned bytes into an array."""
    path = Path(path)
    raw = read_bounded(path, MAX_IDX_BYTES, "IDX file")
    if raw[:2] == b"\x1f\x8b":
        try:  # bounded: a few MB of gzip can expand to many GB
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
                raw = fh.read(MAX_IDX_BYTES + 1)
        except (OSError, EOFError) as exc:
            raise UserError(f"cannot read IDX file {path}: {exc}") from None
        if len(raw) > MAX_IDX_BYTES:
            raise UserError(f"IDX file {path} expands to more than {MAX_IDX_BYTES:,} bytes")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise UserError(f"{path}: only unsigned-byte IDX files (type 0x08) are supported, got type {dtype_code:#04x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{path} is not an IDX file (truncated header)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise UserError(f"{path} is truncated or padded: header says {count} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (used by the tests, and handy to make small data sets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    Path(path).write_bytes(gzip.compress(raw) if compress else raw)


IDX_PREFIXES = ("train", "t10k")


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_idx_digits(folder: Path) -> Digits:
    """MNIST-format digits from a folder holding `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` and/or
    the `t10k-` pair (each optionally `.gz`). All pairs found are pooled; the split is ours, by seed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--data: {folder} is not a folder; give the folder holding the MNIST IDX files")
    images, labels = [], []
    for prefix in IDX_PREFIXES:
        img_file = _find(folder, f"{prefix}-images-idx3-ubyte")
        lab_file = _find(folder, f"{prefix}-labels-idx1-ubyte")
        if img_file is None and lab_file is None:
            continue
        if img_file is None or lab_file is None:
            missing = f"{prefix}-images-idx3-ubyte" if img_file is None else f"{prefix}-labels-idx1-ubyte"
            raise UserError(f"--data: {folder} has only half of the {prefix} pair: {missing}[.gz] is missing")
        x, y = read_idx(img_file), read_idx(lab_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"--data: {img_file.name} ({x.shape}) and {lab_file.name} ({y.shape}) do not "
                            f"form images (N, h, w) with N labels")
        if y.size and y.max() >= N_CLASSES:
            raise UserError(f"--data: {lab_file.name} holds label {int(y.max())}; digits are 0-9")
        images.append(render_digits(x, 255.0))
        labels.append(y.astype(np.int64))
    if not images:
        raise UserError(f"--data: no MNIST IDX files in {folder}; expected train-images-idx3-ubyte and "
                        f"train-labels-idx1-ubyte (or t10k-…), optionally gzipped")
    return Digits(np.concatenate(images), np.concatenate(labels), f"idx:{folder}")


# ---------------------------------------------------------------- the fixed split


@dataclass
class Split:
    """Indices of the train, validation and test parts."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(labels: np.ndarray, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2) -> Split:
    """Fixed train/validation/test split, stratified by class: the same `seed` always gives the same split."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=N_CLASSES)
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < 3:
        raise UserError(f"need at least 3 images of each digit that occurs to split stratified; class counts: "
                        f"{counts.tolist()}")
    index = np.arange(len(labels))
    try:
        rest, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=labels)
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=labels[rest])
    except ValueError as exc:  # too few images for a stratified part of this size
        raise UserError(f"cannot split {len(labels)} images stratified by class: {exc}") from None
    return Split(np.sort(train), np.sort(val), np.sort(test))


@lru_cache(maxsize=4)
def sklearn_test_digits(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rendered images and labels of the classifier's default test split (what `DigitLock-v0` shows)."""
    data = load_sklearn_digits()
    test = split_indices(data.labels, split_seed).test
    images, labels = data.images[test], data.labels[test]
    images.flags.writeable = labels.flags.writeable = False  # shared by every env instance
    return images, labels
