"""Files per second of postprocess.py on .bin and .txt dumps against what the ModelZoo script does.

    python bench/bench_postprocess.py [--files 5000] [--classes 1000] [--repeats 3]

Writes `--files` dumps of `--classes` logits in both encodings into a temporary folder,
then times, side by side in one run (medians of `--repeats`, page cache warm for all):

- reference: the ModelZoo `imagenet_acc_eval.py` loop, per file `readline`, `split`,
  `np.float32(value)` per value into a vector, `np.argsort`, first hit among the top 5;
- reference-lean: the same with a `float()` list comprehension (a fairer, faster Python baseline);
- postprocess .bin / .txt: `postprocess.main` in-process (discovery, bulk read, argpartition
  top-k, result.json written), i.e. everything but interpreter start-up.

Goals (issue 5): .bin >= 20x the reference, text >= 2.5x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import postprocess  # noqa: E402
from repvgg_pipeline.formats.dumps import dump_path, write_dump  # noqa: E402
from repvgg_pipeline.formats.labels import write_labels  # noqa: E402

GOALS = {"bin": 20.0, "txt": 2.5}


def make_data(root: Path, files: int, classes: int) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(files, classes)).astype(np.float32)
    labels = rng.integers(0, classes, size=files)
    logits[np.arange(files), labels] += 2.5
    stems = [f"ILSVRC2012_val_{i:08d}" for i in range(1, files + 1)]
    bin_dir, txt_dir = root / "bin", root / "txt"
    bin_dir.mkdir()
    txt_dir.mkdir()
    for stem, row in zip(stems, logits, strict=True):
        write_dump(dump_path(bin_dir, stem, 0, "BIN"), row)
        write_dump(dump_path(txt_dir, stem, 0, "TXT"), row)
    label_file = root / "val_label.txt"
    write_labels(label_file, [(f"{s}.JPEG", int(lab)) for s, lab in zip(stems, labels, strict=True)])
    return bin_dir, txt_dir, label_file


def modelzoo_reference(dump_dir: Path, label_file: Path, lean: bool = False, topn: int = 5) -> np.ndarray:
    """The ModelZoo postprocess loop (imagenet_acc_eval.py), without its json writing."""
    gt = {}
    with open(label_file) as f:
        for line in f.readlines():
            temp = line.strip().split(" ")
            gt[temp[0].split(".")[0]] = temp[1]
    count_hit, count = np.zeros(topn), 0
    for name in os.listdir(dump_dir):
        count += 1
        temp = name.split(".")[0]
        img_name = temp[: temp.rfind("_")]
        with open(os.path.join(dump_dir, name)) as f:
            values = f.readline().strip().split(" ")
        if lean:
            prediction = np.array([float(v) for v in values], dtype=np.float32)
        else:
            prediction = np.zeros(len(values), dtype=np.float32)
            for ind, prob in enumerate(values):
                prediction[ind] = np.float32(prob)
        sort_index = np.argsort(-prediction)
        real = int(gt[img_name]) + (1 if len(values) == 1001 else 0)
        for i in range(min(len(sort_index), topn)):
            if real == sort_index[i]:
                count_hit[i] += 1
                break
    return np.cumsum(count_hit) / count


def run_postprocess(dump_dir: Path, label_file: Path, out: Path) -> None:
    args = postprocess.get_args_parser().parse_args([str(dump_dir), str(label_file), str(out)])
    postprocess.main(args)


def interleaved_medians(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each contender, run round-robin so machine noise hits them all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, work in contenders.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_postprocess-") as tmp:
        root = Path(tmp)
        print(f"writing {opts.files} dumps of {opts.classes} logits as .bin and .txt in {root} ...", file=sys.stderr)
        bin_dir, txt_dir, label_file = make_data(root, opts.files, opts.classes)
        # keep postprocess's printed summary out of the figures
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
                contextlib.redirect_stderr(devnull):
            # agreement first: the fast path must give the reference's numbers
            expected = modelzoo_reference(txt_dir, label_file)
            for dump_dir in (bin_dir, txt_dir):
                run_postprocess(dump_dir, label_file, root / "check.json")
                got = json.loads((root / "check.json").read_text())["metrics"]
                assert np.allclose([got[f"top{k}"] for k in range(1, 6)], expected), (dump_dir, got, expected)
            timings = interleaved_medians({
                "reference (ModelZoo, .txt)": lambda: modelzoo_reference(txt_dir, label_file),
                "reference-lean (float(), .txt)": lambda: modelzoo_reference(txt_dir, label_file, lean=True),
                "postprocess .bin": lambda: run_postprocess(bin_dir, label_file, root / "r.json"),
                "postprocess .txt": lambda: run_postprocess(txt_dir, label_file, root / "r.json"),
            }, opts.repeats)

    reference = timings["reference (ModelZoo, .txt)"]
    lean = timings["reference-lean (float(), .txt)"]
    print(f"{opts.files} dumps x {opts.classes} classes, median of {opts.repeats}, top-1 {expected[0]:.4f}")
    print(f"{'what':34s} {'seconds':>8s} {'files/s':>10s} {'x ref':>7s} {'x lean':>7s}")
    for name, seconds in timings.items():
        print(f"{name:34s} {seconds:8.3f} {opts.files / seconds:10.0f} {reference / seconds:7.1f} "
              f"{lean / seconds:7.1f}")
    ok = True
    for fmt, goal in GOALS.items():
        ratio = reference / timings[f"postprocess .{fmt}"]
        met = ratio >= goal
        ok &= met
        print(f"goal .{fmt} >= {goal:g}x reference: {ratio:.1f}x {'met' if met else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
