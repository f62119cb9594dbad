"""End-to-end drift between inference runs: which images changed, by how much, and is it significant.

`compare.py REF OTHER [OTHER ...]` reads the dumps of each run through `formats.dumps` (any
layout postprocess.py reads, or an ais_bench summary json) and compares every OTHER with REF
over the images both have:

- agreement: top-1 (same arg-max) and top-5 (same *set* of five best classes);
- closeness of the logit vectors: cosine similarity per image (min, mean), max |diff| and
  max |diff| / max |REF logit|;
- with labels: top-1/top-5 accuracy of both, their difference, and the exact McNemar test of
  the top-1 results: under "no change", the images right in only one run fall on either side
  with probability 1/2, so the two-sided p-value is twice the binomial tail of the smaller count
  (Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91, eq. 1). A large p says the
  accuracy difference is what chance alone gives; float16 rounding typically flips a handful
  of images in both directions;
- the images whose top-1 changed, with both classes and the true one.

Images in one run only are never dropped silently: without `allow_missing` they are an error
naming them, with it they are counted and named in the report. Floats that are NaN in the
computation (NaN logits) are reported as NaN (null in the JSON) and fail any threshold.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repvgg_pipeline.accuracy import label_offset, top_k_indices, topk_accuracy
from repvgg_pipeline.cli import fail
from repvgg_pipeline.formats.dumps import find_dumps, read_dumps

MAX_NAMED = 5  # names listed in a one-line error


@dataclass
class LogitSet:
    """The logits of one run: one row per image, in `keys` order."""

    name: str
    where: str  # the folder or summary the dumps were found through
    keys: list[str]
    logits: np.ndarray  # (N, C) float32
    files: tuple[str, ...] = ()  # the dump files read, to tell two paths to the same run apart from two runs


def default_name(path: Path | str) -> str:
    """A run's name for the table: the dump folder's name, or the summary's without `_summary.json`."""
    path = Path(path)
    name = path.name
    for suffix in ("_summary.json", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name or str(path)


def load_set(path: Path | str, name: str, output_index: int | None = None, dump_format: str | None = None,
             dtype: str = "float32") -> LogitSet:
    """Find and read the dumps of one run (see `formats.dumps.find_dumps`)."""
    dumps = find_dumps(Path(path), output_index, dump_format)
    return LogitSet(name, dumps.where, list(dumps.keys), read_dumps(dumps, dtype), tuple(dumps.files))


def same_dumps(a: LogitSet, b: LogitSet) -> bool:
    """True when two sets were read from the very same files (one run given twice, e.g. as folder and summary)."""
    if len(a.files) != len(b.files) or not a.files:
        return False
    return {os.path.realpath(f) for f in a.files} == {os.path.realpath(f) for f in b.files}


def is_compare_json(path: Path) -> bool:
    """Whether an existing file is a regular file holding a comparison compare.py wrote (so it may be replaced)."""
    import json
    import stat

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "reference" in record and isinstance(record.get("pairs"), list)


def mcnemar_exact(reference_only: int, other_only: int) -> float:
    """Two-sided exact McNemar p-value of the discordant pairs: min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2).

    Computed in exact integer arithmetic (one rounding at the end), so it holds for 50,000 images.
    """
    if reference_only < 0 or other_only < 0:
        raise ValueError("discordant counts cannot be negative")
    n = reference_only + other_only
    if n == 0:
        return 1.0
    low = min(reference_only, other_only)
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, 2 * tail / 2**n)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of `a` with the same row of `b` (float64).

    Two all-zero rows are identical (1.0); one all-zero row against another row is 0.0.
    NaN or inf in a row gives NaN.
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        dot = np.einsum("ij,ij->i", a, b)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = dot / norms
    finite = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    zero_a, zero_b = ~a.any(axis=1), ~b.any(axis=1)
    cosine = np.where(finite & zero_a & zero_b, 1.0, cosine)
    cosine = np.where(finite & (zero_a ^ zero_b), 0.0, cosine)
    return np.where(finite, np.clip(cosine, -1.0, 1.0), np.nan)


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f", ... (+{len(names) - MAX_NAMED} more)" if len(names) > MAX_NAMED else "")


def _nan_max(values: np.ndarray) -> float:
    """max of `values`, NaN when any is NaN (numpy's max propagates NaN; 0.0 for no values)."""
    return float(values.max()) if values.size else 0.0


def compare_pair(reference: LogitSet, other: LogitSet, labels: Mapping[str, int] | None = None,
                 allow_missing: bool = False) -> dict:
    """The JSON record of `other` against `reference` (see the module docstring and the issue's schema)."""
    if reference.logits.shape[1] != other.logits.shape[1]:
        raise fail(f"{other.name} has {other.logits.shape[1]} values per image, {reference.name} "
                   f"{reference.logits.shape[1]}: not outputs of the same model")
    row_of = {key: row for row, key in enumerate(other.keys)}
    ref_keys = set(reference.keys)
    common = [(row, row_of[key]) for row, key in enumerate(reference.keys) if key in row_of]
    only_ref = [key for key in reference.keys if key not in row_of]
    only_other = [key for key in other.keys if key not in ref_keys]
    if not common:
        raise fail(f"{reference.name} ({reference.where}) and {other.name} ({other.where}) have no image in common")
    if (only_ref or only_other) and not allow_missing:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} only in {reference.name} ({_named(only_ref)})")
        if only_other:
            parts.append(f"{len(only_other)} only in {other.name} ({_named(only_other)})")
        raise fail(f"the runs hold different images: {'; '.join(parts)}; pass --allow-missing to compare the "
                   f"{len(common)} both have")
    ref_rows = np.fromiter((r for r, _ in common), dtype=np.int64, count=len(common))
    other_rows = np.fromiter((o for _, o in common), dtype=np.int64, count=len(common))
    keys = [reference.keys[r] for r in ref_rows]
    ref, oth = reference.logits[ref_rows], other.logits[other_rows]
    classes = ref.shape[1]
    k = min(5, classes)
    ref_top, oth_top = top_k_indices(ref, k), top_k_indices(oth, k)
    same_top1 = ref_top[:, 0] == oth_top[:, 0]
    same_top5 = (np.sort(ref_top, axis=1) == np.sort(oth_top, axis=1)).all(axis=1)
    cosine = cosine_rows(ref, oth)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ref.astype(np.float64) - oth.astype(np.float64))
    max_abs_diff = _nan_max(diff)
    max_ref = _nan_max(np.abs(ref.astype(np.float64)))
    non_finite = int((~np.isfinite(ref) | ~np.isfinite(oth)).any(axis=1).sum())

    offset = label_offset(classes)
    label_of = [labels.get(key) if labels is not None else None for key in keys]
    accuracy = mcnemar_p = None
    if labels is not None:
        unlabelled = [key for key, label in zip(keys, label_of, strict=True) if label is None]
        if unlabelled and not allow_missing:
            raise fail(f"{len(unlabelled)} of {len(keys)} compared images have no label ({_named(unlabelled)}); "
                       f"pass --allow-missing to score the others")
        has_label = np.array([label is not None for label in label_of], dtype=bool)
        if has_label.any():
            targets = np.array([label for label in label_of if label is not None], dtype=np.int64)
            ref_acc = topk_accuracy(ref[has_label], targets, k)
            oth_acc = topk_accuracy(oth[has_label], targets, k)
            ref_right = ref_top[has_label, 0] == targets + offset
            oth_right = oth_top[has_label, 0] == targets + offset
            reference_only = int((ref_right & ~oth_right).sum())
            other_only = int((oth_right & ~ref_right).sum())
            mcnemar_p = mcnemar_exact(reference_only, other_only)
            accuracy = {
                "images": int(has_label.sum()),
                "reference": {"top1": ref_acc.topk[0], "top5": ref_acc.topk[k - 1]},
                "other": {"top1": oth_acc.topk[0], "top5": oth_acc.topk[k - 1]},
                "top1_diff": oth_acc.topk[0] - ref_acc.topk[0],
                "top5_diff": oth_acc.topk[k - 1] - ref_acc.topk[k - 1],
                "top1_right_in_reference_only": reference_only,
                "top1_right_in_other_only": other_only,
            }
    flipped = [{"image": keys[i], "reference": int(ref_top[i, 0]) - offset, "other": int(oth_top[i, 0]) - offset,
                "label": label_of[i]} for i in np.flatnonzero(~same_top1)]
    return {
        "name": other.name,
        "source": other.where,
        "images": len(keys),
        "top1_agreement": float(same_top1.mean()),
        "top5_agreement": float(same_top5.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "max_abs_diff": max_abs_diff,
        "max_rel_diff": max_abs_diff / max_ref if max_ref > 0 else (0.0 if max_abs_diff == 0 else math.inf),
        "images_with_non_finite_logits": non_finite,
        "accuracy": accuracy,
        "mcnemar_p": mcnemar_p,
        "flipped": flipped,
        "only_in_reference": only_ref,
        "only_in_other": only_other,
    }


def json_safe(value: object) -> object:
    """`value` with NaN/inf floats as None: strict JSON has no NaN (json.dumps would write an invalid `NaN`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def violations(pairs: Sequence[Mapping], min_cosine: float | None, max_flip_rate: float | None) -> list[str]:
    """The threshold violations of `pairs`, one message each (NaN never passes a threshold)."""
    problems = []
    for pair in pairs:
        cosine = pair["cosine_min"]
        if min_cosine is not None and not cosine >= min_cosine:
            problems.append(f"{pair['name']}: cosine min {cosine:.6f} < --min-cosine {min_cosine:g}")
        flip_rate = 1.0 - pair["top1_agreement"]
        if max_flip_rate is not None and not flip_rate <= max_flip_rate:
            problems.append(f"{pair['name']}: top-1 flip rate {flip_rate:.4%} ({len(pair['flipped'])} of "
                            f"{pair['images']}) > --max-flip-rate {max_flip_rate:g}")
    return problems


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _number(value: float, spec: str) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else format(value, spec)


def table_lines(reference: LogitSet, pairs: Sequence[Mapping], show_flipped: int = 20) -> list[str]:
    """The drift table (markdown) and, per pair, the images whose top-1 changed (at most `show_flipped`)."""
    lines = [f"Drift against {reference.name} ({reference.where}, {len(reference.keys)} images)", "",
             "| run | images | top-1 agree | top-5 agree | cosine min | cosine mean | max abs diff | max rel diff "
             "| top-1 ref -> run | diff | McNemar p |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for pair in pairs:
        acc = pair["accuracy"]
        if acc is None:
            top1, delta, p_value = "-", "-", "-"
        else:
            top1 = f"{_percent(acc['reference']['top1'])} -> {_percent(acc['other']['top1'])}"
            delta = f"{100 * acc['top1_diff']:+.2f} pp"
            p_value = f"{pair['mcnemar_p']:.4g}"
        agree = round(pair["top1_agreement"] * pair["images"])
        lines.append(f"| {pair['name']} | {pair['images']} | {_percent(pair['top1_agreement'])} ({agree}) | "
                     f"{_percent(pair['top5_agreement'])} | {_number(pair['cosine_min'], '.6f')} | "
                     f"{_number(pair['cosine_mean'], '.6f')} | {_number(pair['max_abs_diff'], '.3g')} | "
                     f"{_number(pair['max_rel_diff'], '.3g')} | {top1} | {delta} | {p_value} |")
    for pair in pairs:
        notes = []
        if pair["only_in_reference"]:
            notes.append(f"{len(pair['only_in_reference'])} images only in {reference.name}: "
                         f"{_named(pair['only_in_reference'])}")
        if pair["only_in_other"]:
            notes.append(f"{len(pair['only_in_other'])} images only in {pair['name']}: {_named(pair['only_in_other'])}")
        if pair["images_with_non_finite_logits"]:
            notes.append(f"{pair['images_with_non_finite_logits']} images with NaN/inf logits")
        flipped = pair["flipped"]
        if flipped:
            shown = "; ".join(f"{f['image']} {f['reference']} -> {f['other']}"
                              + ("" if f["label"] is None else f" (label {f['label']})")
                              for f in flipped[:show_flipped])
            more = f"; ... (+{len(flipped) - show_flipped} more)" if len(flipped) > show_flipped else ""
            notes.append(f"top-1 changed in {len(flipped)} images: {shown}{more}")
        else:
            notes.append("no image changed its top-1 class")
        lines.append("")
        lines.extend(f"{pair['name']}: {note}" for note in notes)
    if any(p["accuracy"] is not None for p in pairs):
        lines += ["", "McNemar p: exact two-sided test of the images right in one run only; p >= 0.05 means the "
                      "accuracy difference is within what chance gives."]
    return lines


def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` are the same existing file (also through links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
