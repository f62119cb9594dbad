"""Top-k accuracy of classifier outputs, for all images at once.

The ModelZoo script sorts all 1000 scores of every image in Python (`np.argsort` per
file). Here the k best classes of every image come from one `np.argpartition` over the
(N, C) score matrix, then only those k are ordered, which is what makes scoring 50,000
dumps a matter of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from repvgg_pipeline.cli import fail

BACKGROUND_CLASSES = 1001  # a 1001-way output has a background class first: label + 1


def top_k_indices(logits: np.ndarray, k: int, rows_per_chunk: int = 1024) -> np.ndarray:
    """(N, k) class indices of the k highest scores of each row, best first. NaN scores rank last.

    Rows are taken in chunks so the int64 index array of `argpartition` (8 bytes per score)
    stays a few MB instead of 400 MB for 50,000 x 1000 scores.
    """
    n, classes = logits.shape
    k = min(k, classes)
    best = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, rows_per_chunk):
        block = logits[start:start + rows_per_chunk]
        # NaN sorts above +inf in argpartition/argsort; make it the lowest score instead
        block = np.where(np.isnan(block), -np.inf, block) if np.isnan(block).any() else block
        part = np.argpartition(block, classes - k, axis=1)[:, classes - k:] if k < classes else \
            np.broadcast_to(np.arange(classes), block.shape)
        order = np.argsort(-np.take_along_axis(block, part, axis=1), axis=1, kind="stable")
        best[start:start + rows_per_chunk] = np.take_along_axis(part, order, axis=1)
    return best


@dataclass(frozen=True)
class Accuracy:
    """Top-1..top-k accuracy (fractions) of `images` scored images over `classes` output classes."""

    images: int
    classes: int
    topk: list[float]  # topk[i] = fraction of images whose label is among the i+1 best classes
    mean_per_class_top1: float  # mean over the classes present in the labels of each class's top-1 accuracy
    classes_present: int
    non_finite: int = 0  # images whose scores hold NaN or inf: counted as misses at every k


def non_finite_rows(logits: np.ndarray) -> np.ndarray:
    """Boolean (N,) mask of the rows holding a NaN or an infinity.

    Such a row says nothing about the image (an overflow, a broken model or dump): ranking its
    NaNs low would still "find" the label among the finite values, and an all-NaN row would
    rank classes by index, so it is scored as a miss and reported instead.
    """
    return ~np.isfinite(logits).all(axis=1)


def label_offset(classes: int) -> int:
    """1 for a 1001-way output (background class first, as in TF-slim models), else 0."""
    return 1 if classes == BACKGROUND_CLASSES else 0


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> Accuracy:
    """Top-1..top-k accuracy of (N, C) scores against N 0-based labels (shifted by one for 1001-way outputs)."""
    if k < 1:
        raise fail(f"--topk must be at least 1, got {k}")
    images, classes = logits.shape
    if images == 0:
        raise fail("no images to score")
    targets = np.asarray(labels, dtype=np.int64) + label_offset(classes)
    if targets.max() >= classes:
        raise fail(f"label {int(targets.max()) - label_offset(classes)} does not fit a {classes}-way output")
    best = top_k_indices(logits, k)
    broken = non_finite_rows(logits)
    hits = (best == targets[:, None]) & ~broken[:, None]  # at most one True per row; none for a broken row
    rank_hit = hits.any(axis=1)
    first_hit = np.where(rank_hit, hits.argmax(axis=1), best.shape[1])
    counts = np.bincount(first_hit, minlength=best.shape[1] + 1)[: best.shape[1]]
    topk = (np.cumsum(counts) / images).tolist()
    per_class_total = np.bincount(targets, minlength=classes)
    per_class_top1 = np.bincount(targets, weights=(first_hit == 0), minlength=classes)
    present = per_class_total > 0
    mean_per_class = float((per_class_top1[present] / per_class_total[present]).mean())
    return Accuracy(images, classes, [float(v) for v in topk], mean_per_class, int(present.sum()), int(broken.sum()))
