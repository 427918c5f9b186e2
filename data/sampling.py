"""Class-stratified, seeded samples of a labelled split: `--subset N` and the `--val-split` hold-out.

Both keep each class's share of the split: with balanced classes every class gets an equal share
(within one image), with unbalanced ones a proportional share (largest remainders). The same
allocation as scikit-learn's StratifiedShuffleSplit, which the tests compare it against; written
here so the core install needs no scikit-learn.
"""
from __future__ import annotations

import numpy as np


def class_allocation(labels: np.ndarray, n: int) -> dict[int, int]:
    """How many of `n` samples each class gets: proportional to its count, largest remainders first.

    Ties in the remainder go to the larger class, then to the lower label, so the result is the
    same on every machine. Never more than a class holds.
    """
    classes, counts = np.unique(labels, return_counts=True)
    n = min(int(n), int(counts.sum()))
    exact = counts * n / counts.sum()
    take = np.floor(exact).astype(np.int64)
    order = sorted(range(len(classes)), key=lambda k: (-(exact[k] - take[k]), -counts[k], classes[k]))
    for k in order[: n - int(take.sum())]:
        take[k] += 1
    return {int(c): int(t) for c, t in zip(classes, take)}


def stratified_indices(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded, class-stratified sample of `n` of `labels`, in their original order."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for label, take in class_allocation(labels, n).items():
        members = np.flatnonzero(labels == label)
        picked.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) index arrays: `fraction` of every class held out, stratified and seeded."""
    labels = np.asarray(labels)
    held = stratified_indices(labels, round(len(labels) * fraction), seed)
    kept = np.setdiff1d(np.arange(len(labels)), held, assume_unique=True)
    return kept, held
