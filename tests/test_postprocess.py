"""postprocess.py end to end: dumps of known logits in every layout give the exact expected accuracies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from repvgg_pipeline.formats.dumps import dump_path, write_dump
from repvgg_pipeline.formats.labels import write_labels
from tests.conftest import assert_one_line_error, run_script

CLASSES = 1000
IMAGES = 40
# rank of the true class in each image's scores (0 = top-1); 8 means "not in the top 5"
RANKS = np.array([0] * 22 + [1] * 5 + [2] * 3 + [3] * 2 + [4] * 1 + [8] * 7)
STEMS = [f"ILSVRC2012_val_{i:08d}" for i in range(1, IMAGES + 1)]


def build_logits(classes: int = CLASSES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores where image i's label sits at rank RANKS[i]; distinct multiples of 1/8, exact in every encoding."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=IMAGES)
    logits = np.empty((IMAGES, classes), dtype=np.float32)
    for i, (label, rank) in enumerate(zip(labels, RANKS, strict=True)):
        others = rng.permutation(np.delete(np.arange(classes), label))
        order = np.insert(others, rank, label)  # order[j] gets the j-th highest score
        logits[i, order] = (classes - np.arange(classes)) / 8 - 60
    return logits, labels


def expected_value_list(ranks: np.ndarray, classes: int, topk: int = 5) -> list[dict]:
    value = [{"key": "Number of images", "value": str(len(ranks))},
             {"key": "Number of classes", "value": str(classes)}]
    for k in range(1, topk + 1):
        acc = sum(1 for r in ranks if r < k) / len(ranks)
        value.append({"key": f"Top{k} accuracy", "value": str(round(acc * 100, 2)) + "%"})
    return value


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> dict:
    logits, labels = build_logits()
    root = tmp_path_factory.mktemp("known")
    label_file = root / "val_label.txt"
    write_labels(label_file, [(f"{s}.JPEG", int(lab)) for s, lab in zip(STEMS, labels, strict=True)])
    return {"logits": logits, "labels": labels, "label_file": label_file, "root": root}


def write_layout(folder: Path, logits: np.ndarray, layout: str) -> Path:
    """Write the dumps as one tool would; return what the user passes to postprocess.py."""
    if layout.startswith("ais_bench"):
        outfmt = layout.split("_")[-1].upper()
        run_dir = folder / "result" / "2026_11_22-04_50_00"
        run_dir.mkdir(parents=True)
        filesinfo = {}
        for i, (stem, row) in enumerate(zip(STEMS, logits, strict=False)):
            path = dump_path(run_dir, stem, 0, outfmt)
            write_dump(path, row[None, :])
            filesinfo[str(i)] = {"infiles": [f"prep/{stem}.bin"], "outfiles": [str(path)]}
        (folder / "result" / "2026_11_22-04_50_00_summary.json").write_text(json.dumps({"filesinfo": filesinfo}))
        return folder / "result"
    dump_dir = folder / "result" / "dumpOutput_device0"
    dump_dir.mkdir(parents=True)
    for stem, row in zip(STEMS, logits, strict=False):
        if layout == "benchmark_txt":
            (dump_dir / f"{stem}_1.txt").write_text(" ".join(f"{v:.6f}" for v in row) + " \n")
        else:
            row.astype(np.float32).tofile(dump_dir / f"{stem}_1.bin")
    (folder / "result" / "perf_vision_batchsize_1_device_0.txt").write_text(
        "[infer] throughputRate: 1, Interface throughputRate: 2, moduleLatency: 1\n")
    return folder / "result"


@pytest.mark.parametrize("layout", ["ais_bench_bin", "ais_bench_npy", "ais_bench_txt", "benchmark_txt",
                                    "benchmark_bin", "summary_json"])
def test_every_layout_gives_the_exact_accuracy(known, tmp_path, layout):
    given = write_layout(tmp_path, known["logits"], "ais_bench_npy" if layout == "summary_json" else layout)
    if layout == "summary_json":
        given = given / "2026_11_22-04_50_00_summary.json"
    out = tmp_path / "result.json"
    proc = run_script("postprocess.py", given, known["label_file"], out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["title"] == "Overall statistical evaluation"
    assert result["value"] == expected_value_list(RANKS, CLASSES)
    metrics = result["metrics"]
    assert metrics["top1"] == pytest.approx(22 / 40) and metrics["top5"] == pytest.approx(33 / 40)
    assert metrics["images"] == IMAGES and metrics["dumps_without_label"] == 0
    assert "top1 55.0%" in proc.stdout and "top5 82.5%" in proc.stdout


def test_1001_way_background_first_and_per_class(known, tmp_path):
    logits = np.concatenate([np.full((IMAGES, 1), -100, np.float32), known["logits"]], axis=1)
    given = write_layout(tmp_path, logits, "ais_bench_bin")
    out = tmp_path / "out" / "r.json"
    proc = run_script("postprocess.py", given, known["label_file"], out, "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["value"] == expected_value_list(RANKS, 1001, topk=3)
    per_class: dict[int, list[bool]] = {}
    for label, rank in zip(known["labels"], RANKS, strict=True):
        per_class.setdefault(int(label), []).append(rank == 0)
    expected = sum(sum(hits) / len(hits) for hits in per_class.values()) / len(per_class)
    assert result["metrics"]["mean_per_class_top1"] == pytest.approx(expected)
    assert result["metrics"]["classes_present"] == len(per_class)


def modelzoo_reference(dump_dir: Path, labels: dict[str, int], topn: int = 5) -> list[float]:
    """What the ModelZoo script does: per file readline/split/float, argsort, count the first hit."""
    hits, count = np.zeros(topn), 0
    for name in sorted(p.name for p in dump_dir.iterdir()):
        with open(dump_dir / name) as f:
            values = [float(v) for v in f.readline().strip().split(" ")]
        count += 1
        order = np.argsort(-np.array(values, np.float32))
        stem = name.split(".")[0]
        label = labels[stem[: stem.rfind("_")]] + (1 if len(values) == 1001 else 0)
        for i in range(topn):
            if order[i] == label:
                hits[i] += 1
                break
    return list(np.cumsum(hits) / count)


def test_agrees_with_modelzoo_algorithm_on_random_scores(known, tmp_path):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(IMAGES, CLASSES)).astype(np.float32)
    logits[np.arange(IMAGES), known["labels"]] += rng.uniform(0, 3, size=IMAGES).astype(np.float32)
    given = write_layout(tmp_path, logits, "benchmark_txt")
    out = tmp_path / "r.json"
    proc = run_script("postprocess.py", given / "dumpOutput_device0", known["label_file"], out)
    assert proc.returncode == 0, proc.stderr
    labels = {s: int(v) for s, v in zip(STEMS, known["labels"], strict=True)}
    reference = modelzoo_reference(given / "dumpOutput_device0", labels)
    metrics = json.loads(out.read_text())["metrics"]
    assert [metrics[f"top{k}"] for k in range(1, 6)] == pytest.approx(reference)
    assert 0 < reference[0] < reference[4] < 1  # a non-trivial case


def test_modelzoo_four_argument_form(known, tmp_path):
    given = write_layout(tmp_path, known["logits"], "benchmark_bin")
    proc = run_script("postprocess.py", given / "dumpOutput_device0", known["label_file"], tmp_path / "acc",
                      "result_bs1.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "acc" / "result_bs1.json").read_text())["value"] == expected_value_list(RANKS,
                                                                                                          CLASSES)


def test_missing_labels_and_dumps_are_counted(known, tmp_path):
    given = write_layout(tmp_path, known["logits"][:30], "ais_bench_bin")  # 10 labels without a dump
    run_dir = given / "2026_11_22-04_50_00"
    write_dump(run_dir / "not_in_labels_0.bin", known["logits"][0])
    out = tmp_path / "r.json"
    proc = run_script("postprocess.py", given, known["label_file"], out)
    assert_one_line_error(proc, 2, contains="not_in_labels_0.bin")
    assert not out.exists()
    proc = run_script("postprocess.py", given, known["label_file"], out, "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["images"] == 30 and metrics["dumps"] == 31
    assert metrics["dumps_without_label"] == 1 and metrics["labels_without_dump"] == 10
    assert metrics["top1"] == pytest.approx(np.mean(RANKS[:30] < 1))
    assert "1 dumps without a label" in proc.stderr and "10 labels without a dump" in proc.stderr


def test_bad_input_is_one_line(known, tmp_path):
    labels = known["label_file"]
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_script("postprocess.py", tmp_path / "empty", labels, tmp_path / "r.json"), 2,
                          contains="no dumps found")
    assert_one_line_error(run_script("postprocess.py", tmp_path / "nowhere", labels, tmp_path / "r.json"), 2,
                          contains="not found")
    given = write_layout(tmp_path / "t", known["logits"][:3], "ais_bench_txt")
    bad = given / "2026_11_22-04_50_00" / f"{STEMS[1]}_0.txt"
    bad.write_text("0.1 0.2 nan? 0.3\n")
    assert_one_line_error(run_script("postprocess.py", given, labels, tmp_path / "r.json"), 2, contains=bad.name)
    bad.write_text("0.1 0.2 0.3\n")
    assert_one_line_error(run_script("postprocess.py", given, labels, tmp_path / "r.json"), 2,
                          contains="3 values, expected 1000")
    assert_one_line_error(run_script("postprocess.py", given, tmp_path / "no_labels.txt", tmp_path / "r.json"), 2,
                          contains="label file not found")
    assert not (tmp_path / "r.json").exists()


def test_real_label_file(shared_data, tmp_path):
    lines = (shared_data / "val_label_50000.txt").read_text().splitlines()[:IMAGES]
    names, labels = zip(*(line.split() for line in lines), strict=True)
    assert [n.split(".")[0] for n in names] == STEMS
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(IMAGES, CLASSES)).astype(np.float32)
    top1 = rng.random(IMAGES) < 0.6
    logits[np.arange(IMAGES)[top1], np.array(labels, int)[top1]] = 10.0
    given = write_layout(tmp_path, logits, "ais_bench_bin")
    out = tmp_path / "r.json"
    proc = run_script("postprocess.py", given, shared_data / "val_label_50000.txt", out)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["top1"] == pytest.approx(top1.mean())
    assert metrics["labels_without_dump"] == 50000 - IMAGES


def test_top_k_indices_match_a_full_sort_in_chunks():
    from repvgg_pipeline.accuracy import top_k_indices

    rng = np.random.default_rng(5)
    scores = rng.normal(size=(700, 60)).astype(np.float32)
    full = np.argsort(-scores, axis=1, kind="stable")
    assert np.array_equal(top_k_indices(scores, 5, rows_per_chunk=128), full[:, :5])
    assert np.array_equal(top_k_indices(scores, 60), full)
    scores[0, :] = np.nan
    scores[0, 7] = 0.0
    assert top_k_indices(scores[:1], 1)[0, 0] == 7  # NaN never outranks a number


def test_label_beyond_the_output_is_an_error():
    from repvgg_pipeline.accuracy import topk_accuracy
    from repvgg_pipeline.cli import UserError

    with pytest.raises(UserError, match="does not fit a 10-way output"):
        topk_accuracy(np.zeros((2, 10), np.float32), np.array([3, 10]))
