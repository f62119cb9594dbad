"""The accuracy report `result.json`: the ModelZoo layout plus machine-readable numbers.

ASCEND_FORMATS.md §6. ModelZoo tooling reads `title` and `value` (a list of string
key/value pairs, accuracies as `str(round(acc * 100, 2)) + '%'`), so those stay exactly
as the ModelZoo script writes them. Numbers meant for programs (fractions, counts, mean
per-class accuracy) sit beside them under `metrics`, where no one has to parse "72.15%".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from repvgg_pipeline import atomic
from repvgg_pipeline.accuracy import Accuracy
from repvgg_pipeline.cli import fail

TITLE = "Overall statistical evaluation"


def percent_text(fraction: float) -> str:
    """`0.72146` -> `"72.15%"`, the ModelZoo rounding (`str(round(acc * 100, 2)) + '%'`)."""
    return str(round(float(fraction) * 100, 2)) + "%"


def build_result(accuracy: Accuracy, extra: dict[str, Any] | None = None) -> dict:
    """The result.json content for `accuracy`; `extra` (counts of unmatched dumps/labels, sources) goes into metrics."""
    value = [
        {"key": "Number of images", "value": str(accuracy.images)},
        {"key": "Number of classes", "value": str(accuracy.classes)},
    ]
    value += [{"key": f"Top{i} accuracy", "value": percent_text(acc)} for i, acc in enumerate(accuracy.topk, 1)]
    metrics: dict[str, Any] = {
        "images": accuracy.images,
        "classes": accuracy.classes,
        **{f"top{i}": acc for i, acc in enumerate(accuracy.topk, 1)},
        "mean_per_class_top1": accuracy.mean_per_class_top1,
        "classes_present": accuracy.classes_present,
    }
    metrics.update(extra or {})
    return {"title": TITLE, "value": value, "metrics": metrics}


def write_result(path: Path, result: dict) -> None:
    """Write result.json atomically."""
    atomic.write_text(path, json.dumps(result, indent=1) + "\n")


def read_result(path: Path) -> dict:
    """Read a result.json (ours or the ModelZoo script's); `{key: value}` of its `value` list is under "table"."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise fail(f"result file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise fail(f"cannot read result file {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("value"), list):
        raise fail(f"{path} is not a ModelZoo result.json (no 'value' list)")
    data["table"] = {item.get("key"): item.get("value") for item in data["value"] if isinstance(item, dict)}
    _check_accuracies(path, data)
    return data


def _check_accuracies(path: Path, data: dict) -> None:
    """A top-k accuracy that is NaN or outside 0..100 % is a corrupt file, not a figure to show (json reads NaN)."""
    metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
    found = [(key, value) for key, value in metrics.items()
             if re.fullmatch(r"top\d+", str(key)) and isinstance(value, int | float) and not isinstance(value, bool)]
    for key, text in data["table"].items():
        if re.fullmatch(r"Top\d+ accuracy", str(key)) and isinstance(text, str):
            try:
                found.append((key, float(text.rstrip("%")) / 100.0))
            except ValueError:
                raise fail(f"{path}: {key} is {text!r}, not a percentage") from None
    for key, value in found:
        if not 0.0 <= value <= 1.0:  # also false for NaN
            raise fail(f"{path}: {key} is {value}, not an accuracy (a fraction in 0..1): a corrupt result file")
