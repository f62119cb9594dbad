"""compare.py: every figure checked against numbers worked out by hand from the dumps; McNemar on a textbook case."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from repvgg_pipeline.compare import cosine_rows, mcnemar_exact
from repvgg_pipeline.formats import dumps, summary
from repvgg_pipeline.formats.labels import write_labels
from tests.conftest import assert_one_line_error, run_script

IMAGES, CLASSES = 12, 7
FLIPPED = 5  # images 0..4 have their two best classes swapped in OTHER


# ---------------------------------------------------------------- McNemar

def test_mcnemar_textbook_example():
    """Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et al.: airway
    hyper-responsiveness before/after stem cell transplantation, 21 children): discordant pairs 1 and 7.
    Exact conditional p = 2 * P(X <= 1), X ~ Bin(8, 1/2) = 2 * 9/256 = 0.0703 (the paper's 0.070)."""
    assert mcnemar_exact(1, 7) == pytest.approx(0.0703125, abs=0)
    assert mcnemar_exact(7, 1) == mcnemar_exact(1, 7)
    assert round(mcnemar_exact(1, 7), 3) == 0.070


def test_mcnemar_edge_cases_and_large_counts():
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence of a change
    assert mcnemar_exact(4, 4) == 1.0  # equal counts: the doubled tail exceeds 1 and is capped
    assert mcnemar_exact(0, 1) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024, abs=0)
    # 50,000-image scale: exact integer arithmetic, no overflow, no 0 from underflow of the terms
    big = mcnemar_exact(480, 560)
    assert 0.01 < big < 0.02
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_mcnemar_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for b, c in [(1, 7), (3, 12), (20, 31), (480, 560), (1000, 1000)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_cosine_of_zero_and_non_finite_rows():
    a = np.array([[0, 0], [0, 0], [1, 0], [np.nan, 1], [3, 4]], dtype=np.float32)
    b = np.array([[0, 0], [1, 1], [0, 2], [1, 1], [6, 8]], dtype=np.float32)
    got = cosine_rows(a, b)
    assert got[0] == 1.0 and got[1] == 0.0 and got[2] == 0.0 and np.isnan(got[3]) and got[4] == pytest.approx(1.0)


# ---------------------------------------------------------------- three runs, worked out by hand

def _order(row: np.ndarray) -> list[int]:
    """Class indices from best to worst, by a plain Python sort (the hand computation)."""
    return sorted(range(len(row)), key=lambda c: -float(row[c]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """REF (.bin, flat folder), OTHER (.npy, one timestamped folder down), TXT (REF again via a summary json)."""
    root = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(3)
    # well separated scores (no near-ties): a permutation of 0..6 scaled, plus a little noise
    ref = np.stack([rng.permutation(CLASSES) * 1.5 + rng.uniform(0, 0.1, CLASSES) for _ in range(IMAGES)])
    ref = ref.astype(np.float32)
    other = ref + rng.normal(0, 0.01, ref.shape).astype(np.float32)
    for i in range(FLIPPED):  # swap the two best classes: top-1 changes, the top-5 set does not
        first, second = _order(ref[i])[:2]
        other[i, [first, second]] = other[i, [second, first]]
    first, last = _order(ref[5])[0], _order(ref[5])[-1]  # image 5: best and worst swapped: top-1 and top-5 change
    other[5, [first, last]] = other[5, [last, first]]
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(1, IMAGES + 1)]

    # labels: flipped images 0-3 right in OTHER only, 4 right in REF only; 5 right in REF only;
    # 6-8 right in both; 9-11 in neither
    labels = {}
    for i, name in enumerate(names):
        if i < 4:
            labels[name] = _order(other[i])[0]
        elif i < 9:
            labels[name] = _order(ref[i])[0]
        else:
            labels[name] = _order(ref[i])[3]
    write_labels(root / "val_label.txt", [(f"{n}.JPEG", labels[n]) for n in names])

    (root / "ref").mkdir()
    sub = root / "other" / "2024_01_01-00_00_00"
    sub.mkdir(parents=True)
    (root / "txt").mkdir()
    filesinfo = {}
    for i, name in enumerate(names):
        dumps.write_dump(dumps.dump_path(root / "ref", name, 0, "BIN"), ref[i])
        dumps.write_dump(dumps.dump_path(sub, name, 0, "NPY"), other[i])
        txt = dumps.dump_path(root / "txt", name, 0, "TXT")
        dumps.write_dump(txt, ref[i])
        filesinfo[str(i)] = {"infiles": [f"{name}.bin"], "outfiles": [str(txt)]}
    summary.write_summary(root / "txt_summary.json", summary.build_summary(filesinfo, {}, [1.0], [], [], 1))
    return {"root": root, "ref": ref, "other": other, "names": names, "labels": labels}


def test_three_way_comparison_and_json_match_hand_computation(runs, tmp_path):
    root = runs["root"]
    out = tmp_path / "drift.json"
    proc = run_script("compare.py", root / "ref", root / "other", root / "txt_summary.json",
                      "--labels", root / "val_label.txt", "--names", "torch,fp16,text", "--json", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["reference"] == "torch"
    fp16, text = record["pairs"]
    assert fp16["name"] == "fp16" and text["name"] == "text"
    ref, other, names, labels = runs["ref"], runs["other"], runs["names"], runs["labels"]

    # by construction
    assert fp16["images"] == text["images"] == IMAGES
    assert fp16["top1_agreement"] == pytest.approx((IMAGES - FLIPPED - 1) / IMAGES)
    assert fp16["top5_agreement"] == pytest.approx((IMAGES - 1) / IMAGES)
    assert [f["image"] for f in fp16["flipped"]] == names[:FLIPPED + 1]
    for i, flip in enumerate(fp16["flipped"]):
        assert flip == {"image": names[i], "reference": _order(ref[i])[0], "other": _order(other[i])[0],
                        "label": labels[names[i]]}
    acc = fp16["accuracy"]
    # REF right on 4, 5, 6, 7, 8; OTHER right on 0, 1, 2, 3, 6, 7, 8
    assert acc["reference"]["top1"] == pytest.approx(5 / 12) and acc["other"]["top1"] == pytest.approx(7 / 12)
    assert acc["top1_diff"] == pytest.approx(2 / 12)
    assert (acc["top1_right_in_reference_only"], acc["top1_right_in_other_only"]) == (2, 4)
    assert fp16["mcnemar_p"] == pytest.approx(2 * (1 + 6 + 15) / 64)  # 2 * P(X <= 2), X ~ Bin(6, 1/2)
    # top-5: label among the five best of each row, counted by hand
    ref5 = sum(labels[n] in _order(ref[i])[:5] for i, n in enumerate(names)) / IMAGES
    oth5 = sum(labels[n] in _order(other[i])[:5] for i, n in enumerate(names)) / IMAGES
    assert acc["reference"]["top5"] == pytest.approx(ref5) and acc["other"]["top5"] == pytest.approx(oth5)

    # logit closeness, row by row in plain Python
    cosines = []
    for a, b in zip(ref.tolist(), other.tolist(), strict=True):
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        cosines.append(dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b)))
    assert fp16["cosine_min"] == pytest.approx(min(cosines), rel=1e-12)
    assert fp16["cosine_mean"] == pytest.approx(sum(cosines) / IMAGES, rel=1e-12)
    max_diff = max(abs(float(x) - float(y)) for a, b in zip(ref, other, strict=True) for x, y in zip(a, b, strict=True))
    assert fp16["max_abs_diff"] == pytest.approx(max_diff, rel=1e-12)
    assert fp16["max_rel_diff"] == pytest.approx(max_diff / float(np.abs(ref).max()), rel=1e-12)

    # the same logits through %f text: only the 6th decimal moves (plus float32 parsing at ~10: 1e-6)
    assert text["top1_agreement"] == 1.0 and text["top5_agreement"] == 1.0 and text["flipped"] == []
    assert text["max_abs_diff"] <= 2e-6 and text["cosine_min"] > 0.9999999
    assert text["mcnemar_p"] == 1.0 and text["accuracy"]["top1_diff"] == 0.0

    # the table shows the same figures
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| fp16 |"))
    assert "50.00% (6)" in row and "91.67%" in row and "41.67% -> 58.33%" in row and "+16.67 pp" in row
    assert "0.6875" in row
    assert f"{names[0]} {_order(ref[0])[0]} -> {_order(other[0])[0]} (label {labels[names[0]]})" in proc.stdout


def test_thresholds_exit_1_after_writing_the_report(runs, tmp_path):
    root = runs["root"]
    out = tmp_path / "d.json"
    proc = run_script("compare.py", root / "ref", root / "other", "--json", out, "--max-flip-rate", "0.4")
    assert proc.returncode == 1 and "flip rate" in proc.stderr and out.is_file()
    assert json.loads(out.read_text())["pairs"][0]["accuracy"] is None  # no labels: no accuracy
    ok = run_script("compare.py", root / "ref", root / "other", "--max-flip-rate", "0.5", "--min-cosine", "0.6")
    assert ok.returncode == 0, ok.stderr
    tight = run_script("compare.py", root / "ref", root / "other", "--min-cosine", "0.7")  # image 5: cosine 0.61
    assert tight.returncode == 1 and "cosine min" in tight.stderr


def test_images_in_one_set_only_are_named_not_dropped(runs, tmp_path):
    root, names = runs["root"], runs["names"]
    partial = tmp_path / "partial"
    partial.mkdir()
    for i, name in enumerate(names[:-2]):
        dumps.write_dump(dumps.dump_path(partial, name, 0, "BIN"), runs["ref"][i])
    dumps.write_dump(dumps.dump_path(partial, "extra_image", 0, "BIN"), runs["ref"][0])
    proc = run_script("compare.py", root / "ref", partial)
    assert_one_line_error(proc, 2, "2 only in ref")
    assert names[-1] in proc.stderr and "1 only in partial (extra_image)" in proc.stderr
    out = tmp_path / "d.json"
    allowed = run_script("compare.py", root / "ref", partial, "--allow-missing", "--json", out)
    assert allowed.returncode == 0, allowed.stderr
    pair = json.loads(out.read_text())["pairs"][0]
    assert pair["images"] == IMAGES - 2
    assert pair["only_in_reference"] == names[-2:] and pair["only_in_other"] == ["extra_image"]
    assert "2 images only in ref" in allowed.stdout


def test_nan_logits_are_null_in_json_and_fail_thresholds(runs, tmp_path):
    root, names = runs["root"], runs["names"]
    broken = tmp_path / "nan"
    broken.mkdir()
    for i, name in enumerate(names):
        row = runs["ref"][i].copy()
        if i == 3:
            row[:] = np.nan
        dumps.write_dump(dumps.dump_path(broken, name, 0, "BIN"), row)
    out = tmp_path / "d.json"
    proc = run_script("compare.py", root / "ref", broken, "--json", out, "--min-cosine", "0.5")
    assert proc.returncode == 1, proc.stderr
    pair = json.loads(out.read_text())["pairs"][0]  # strict JSON: parses without NaN support
    assert pair["cosine_min"] is None and pair["images_with_non_finite_logits"] == 1


def test_bad_input_is_one_line_exit_2(runs, tmp_path):
    root = runs["root"]
    assert_one_line_error(run_script("compare.py", root / "ref", tmp_path / "missing"), 2, "not found")
    assert_one_line_error(run_script("compare.py", root / "ref", root / "other", "--names", "a,b,c"), 2, "--names")
    assert_one_line_error(run_script("compare.py", root / "ref", root / "other", "--max-flip-rate", "5"), 2)
    assert_one_line_error(run_script("compare.py", root / "txt_summary.json", root / "ref", "--json",
                                     root / "txt_summary.json"), 2, "one of the inputs")
    assert_one_line_error(run_script("compare.py", root / "ref", root / "other", "--json", "/proc/no/x.json"), 2,
                          "cannot write")
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for i, name in enumerate(runs["names"]):
        dumps.write_dump(dumps.dump_path(narrow, name, 0, "BIN"), runs["ref"][i][:5])
    assert_one_line_error(run_script("compare.py", root / "ref", narrow), 2, "values per image")
    Path(tmp_path / "labels.txt").write_text("ILSVRC2012_val_00000001.JPEG 1\n")
    assert_one_line_error(run_script("compare.py", root / "ref", root / "other", "--labels", tmp_path / "labels.txt"),
                          2, "have no label")


# ---------------------------------------------------------------- in run_pipeline.sh

def test_pipeline_passes_the_precision_mode_and_prints_the_drift_table(tmp_path):
    """The Ascend path with the stand-ins: ATC gets --precision_mode; the table compares PyTorch, ONNX and the OM."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT, STANDINS

    log = tmp_path / "calls.jsonl"
    env = dict(os.environ, PYTHON=sys.executable, PATH=f"{STANDINS / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(STANDINS), STANDIN_LOG=str(log), STANDIN_PYTHON=sys.executable,
               STANDIN_NPU_CHIP="310P3")
    script = str(REPO_ROOT / "scripts" / "run_pipeline.sh")
    bad = subprocess.run(["bash", script, "--precision_mode", "fp8"], env=env, capture_output=True, text=True)
    assert_one_line_error(bad, 2, "--precision_mode")
    proc = subprocess.run(["bash", script, "--workdir", tmp_path / "w", "--batch-sizes", "16",
                           "--precision_mode", "allow_fp32_to_fp16"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    atc_calls = [c for c in map(json.loads, log.read_text().splitlines()) if c[0] == "atc"]
    assert atc_calls and all("--precision_mode=allow_fp32_to_fp16" in call for call in atc_calls)
    after_table = proc.stdout.split("| RepVGG-A0 | ais_bench | 16 |", 1)[1]  # the drift table comes under it
    assert "Drift against torch" in after_table and "| om-allow_fp32_to_fp16 | 32 |" in after_table
    record = json.loads((tmp_path / "w" / "drift.json").read_text())
    assert [p["name"] for p in record["pairs"]] == ["onnx-fp32", "om-allow_fp32_to_fp16"]
    onnx_pair = record["pairs"][0]
    assert onnx_pair["images"] == 32 and onnx_pair["top1_agreement"] == 1.0 and onnx_pair["max_rel_diff"] < 1e-4
