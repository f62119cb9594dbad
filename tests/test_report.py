"""report.py and the batch-size sweep: real runs of infer.py and postprocess.py on a tiny ONNX model, then the
report's figures checked against the summaries and result.json files they come from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from repvgg_pipeline.formats import summary as summary_format
from repvgg_pipeline.formats.labels import write_labels
from repvgg_pipeline.formats.perf import read_perf
from repvgg_pipeline.formats.result import read_result
from repvgg_pipeline.report_html import PUBLISHED_THROUGHPUT, per_batch_times
from tests.conftest import REPO_ROOT, assert_one_line_error, run_script

SIZE = 16
CLASSES = 10
IMAGES = 12
BATCHES = (1, 4, 8)


def tiny_model(path: Path) -> None:
    """Flatten + MatMul, dynamic batch: an image classifier that runs in microseconds."""
    weights = np.random.default_rng(1).standard_normal((3 * SIZE * SIZE, CLASSES)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["actual_input_1"], ["flat"], axis=1),
         helper.make_node("MatMul", ["flat", "w"], ["output1"])],
        "tiny", [helper.make_tensor_value_info("actual_input_1", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output1", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(path))


def make_workdir(root: Path, batches: tuple[int, ...] = BATCHES, sweep: bool = True) -> Path:
    """A work folder as run_pipeline.sh leaves it: result/bs{B}/ dumps and summaries, result_bs{B}.json, sweep file."""
    work = root / "work"
    (work / "prep").mkdir(parents=True)
    tiny_model(work / "repvgg.onnx")
    rng = np.random.default_rng(0)
    labels = []
    for i in range(IMAGES):
        rng.standard_normal((3, SIZE, SIZE)).astype(np.float32).tofile(work / "prep" / f"img_{i:03d}.bin")
        labels.append((f"img_{i:03d}.JPEG", int(rng.integers(0, CLASSES))))
    write_labels(work / "val_label.txt", labels)
    for batch in batches:
        proc = run_script("infer.py", work / "repvgg.onnx", work / "prep", work / "result", "--output_dirname",
                          f"bs{batch}", "--batch-size", batch, "--threads", 1)
        assert proc.returncode == 0, proc.stderr
    proc = run_script("postprocess.py", work / "result" / f"bs{batches[0]}", work / "val_label.txt",
                      work / f"result_bs{batches[0]}.json", "--num-classes", CLASSES)
    assert proc.returncode == 0, proc.stderr
    if sweep and len(batches) > 1:
        proc = run_sweep("--backend", "onnxruntime", "--json",
                          work / "batch_agreement.json", *[f"bs{b}={work / 'result' / f'bs{b}'}" for b in batches])
        assert proc.returncode == 0, proc.stderr
    return work


def run_sweep(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repvgg_pipeline.report_sweep", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def run_report(work: Path, *args: object):
    return run_script("report.py", work, *args)


class _Cells(HTMLParser):
    """Every table of the page as rows of (text, data-exact) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str | None]]]] = []
        self._cell: list[str] | None = None
        self._exact: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._exact = [], dict(attrs).get("data-exact")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._exact))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_tables(path: Path) -> dict[str, list[list[tuple[str, str | None]]]]:
    """Tables keyed by the text of the <h2> before them."""
    text = path.read_text(encoding="utf-8")
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    parser = _Cells()
    parser.feed(text)
    return dict(zip(titles, parser.tables, strict=True))


def md_closing_table(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("| "):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("report"))


def test_report_figures_equal_those_in_the_summaries_and_result_json(work):
    proc = run_report(work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "report.html").is_file() and (work / "report.md").is_file()
    tables = html_tables(work / "report.html")
    result = read_result(work / "result_bs1.json")

    throughput = tables["Throughput per batch size"]
    header = [text for text, _ in throughput[0]]
    fps_col = header.index("throughput per device (img/s)")
    rows = throughput[1:]
    assert [int(r[2][0]) for r in rows] == list(BATCHES)
    for row, batch in zip(rows, BATCHES, strict=True):
        summary_file = work / "result" / f"bs{batch}_summary.json"
        fps = read_perf(summary_file).per_device_fps
        summary = summary_format.read_summary(summary_file)
        assert float(row[fps_col][1]) == fps == summary["throughput"]  # exact, not rounded
        assert row[fps_col][0] == f"{fps:.1f}"
        assert row[4][0] == f"{summary['NPU_compute_time']['mean']:.3f}"
        assert int(row[3][0]) == summary["NPU_compute_time"]["count"] == -(-IMAGES // batch)

    accuracy = tables["Accuracy per backend and batch size"]
    ours = [r for r in accuracy[1:] if not r[0][0].startswith("published")]
    assert len(ours) == len(BATCHES)
    for row in ours:
        assert row[3][0] == result["table"]["Top1 accuracy"] and row[4][0] == result["table"]["Top5 accuracy"]
        assert float(row[3][1]) == result["metrics"]["top1"] and float(row[4][1]) == result["metrics"]["top5"]
        assert int(row[2][0]) == IMAGES
    assert ours[0][5][0] == "result_bs1.json"
    assert all("same top-5" in row[5][0] for row in ours[1:])  # computed once: the dumps agree

    md_rows = md_closing_table(work / "report.md")
    assert [(r[1], r[2], r[3]) for r in md_rows] == [("onnxruntime", str(b), str(IMAGES)) for b in BATCHES]
    for row, batch in zip(md_rows, BATCHES, strict=True):
        assert row[6] == f"{read_perf(work / 'result' / f'bs{batch}_summary.json').per_device_fps:.1f}"
        assert row[4] == f"{result['metrics']['top1'] * 100:.2f}%"
    assert proc.stdout.splitlines()[:2] == (work / "report.md").read_text().splitlines()[:2]


def test_report_html_is_self_contained(work):
    assert run_report(work).returncode == 0
    page = (work / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/svg+xml;base64,") for s in sources), sources
    assert len(re.findall(r'<img class="plot"', page)) == 2  # throughput and per-batch compute times


def test_sweep_reports_a_batch_size_whose_outputs_differ(tmp_path):
    work = make_workdir(tmp_path, sweep=False)
    dump = work / "result" / "bs4" / "img_005_0.bin"
    logits = np.fromfile(dump, dtype=np.float32)
    logits[int(np.argmin(logits))] = logits.max() + 1  # a new top-1 for one image
    logits.tofile(dump)
    proc = run_sweep("--backend", "onnxruntime", "--json",
                      work / "batch_agreement.json", *[f"bs{b}={work / 'result' / f'bs{b}'}" for b in BATCHES])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["bs4"]  # only the differing run needs its own accuracy
    agreement = json.loads((work / "batch_agreement.json").read_text())
    by_name = {c["name"]: c for c in agreement["comparisons"]}
    assert by_name["bs4"]["top1_changed"] == 1 and by_name["bs4"]["equal"] is False
    assert by_name["bs4"]["max_abs_diff"] > 0
    assert by_name["bs8"]["equal"] is True and by_name["bs8"]["identical"] is True
    assert "top-1 differs on 1, top-5 on 1 of 12 images" in proc.stderr

    assert run_script("postprocess.py", work / "result" / "bs4", work / "val_label.txt",
                      work / "result_bs4.json", "--num-classes", CLASSES).returncode == 0
    assert run_report(work).returncode == 0
    rows = {r[1][0]: r for r in html_tables(work / "report.html")["Accuracy per backend and batch size"][1:]}
    assert rows["4"][5][0].startswith("differs from bs1: top-1 changed on 1 of 12")
    assert rows["4"][3][0] == read_result(work / "result_bs4.json")["table"]["Top1 accuracy"]
    assert "bs4 vs bs1: top-1 differs on 1" in (work / "report.md").read_text()


def test_ais_bench_summaries_drift_and_card_figures(tmp_path):
    """A real ais_bench summary (sys.argv args, no per-batch list or interval pairs), a drift.json, a 310 chip."""
    work = make_workdir(tmp_path, batches=(1, 16), sweep=False)
    for batch, times in ((1, None), (16, [[0.0, 2.5], [3.0, 5.0]])):
        path = work / "result" / f"bs{batch}_summary.json"
        data = summary_format.read_summary(path)
        data["args"] = ["ais_bench", "--model", f"repvgg_bs{batch}.om", "--batchsize", str(batch)]
        data.pop("npu_compute_time_list")
        if times is not None:
            data["npu_compute_time_list"] = times
        summary_format.write_summary(path, data)
    assert per_batch_times(summary_format.read_summary(work / "result" / "bs16_summary.json")) == [2.5, 2.0]
    drift = {"reference": "torch", "pairs": [
        {"name": "onnx", "images": 12, "top1_agreement": 1.0, "top5_agreement": 1.0, "cosine_min": 0.9999991,
         "cosine_mean": 0.9999998, "max_abs_diff": 1.2e-5, "max_rel_diff": 3e-7, "accuracy": {}, "mcnemar_p": 1.0,
         "flipped": []},
        {"name": "fp16", "source": str(work / "result" / "bs16"), "images": 12, "top1_agreement": 11 / 12,
         "top5_agreement": 1.0, "cosine_min": 0.99, "cosine_mean": 0.999, "max_abs_diff": 0.01, "max_rel_diff": 2e-3,
         "mcnemar_p": 1.0, "flipped": [{"image": "img_003", "reference": 4, "other": 7, "label": 4}],
         "accuracy": {"images": 12, "reference": {"top1": 0.5, "top5": 0.75}, "other": {"top1": 0.25, "top5": 0.75},
                      "top1_diff": -0.25}}]}
    (work / "drift.json").write_text(json.dumps(drift))
    proc = run_report(work, "--chip", "310", "--arch", "RepVGG-A0")
    assert proc.returncode == 0, proc.stderr
    tables = html_tables(work / "report.html")
    throughput = tables["Throughput per batch size"]
    header = [t for t, _ in throughput[0]]
    card = header.index("per 310 card, x4 (img/s)")
    for row in throughput[1:]:
        assert row[0][0] == "ais_bench"
        assert float(row[card][1]) == pytest.approx(4 * float(row[header.index("throughput per device (img/s)")][1]))
    assert "310P card 8,752; 310 card 7,115; T4 4,784" in throughput[2][-1][0]
    drift_rows = tables["Accuracy drift against torch (compare.py)"][1:]
    assert [r[0][0] for r in drift_rows] == ["onnx", "fp16"]
    assert drift_rows[1][2][0] == "91.67%" and drift_rows[1][-1][0] == "1"
    assert drift_rows[1][8][0] == "50.00% -> 25.00%" and drift_rows[1][9][0] == "-25.000%"
    # bs16 has no result.json of its own: its accuracy is compare.py's, and says so
    accuracy = {r[1][0]: r for r in tables["Accuracy per backend and batch size"][1:]}
    assert [accuracy["16"][i][0] for i in (3, 4, 5)] == ["25.00%", "75.00%", "drift.json (compare.py)"]
    assert accuracy["1"][5][0] == "result_bs1.json"
    page = (work / "report.html").read_text()
    assert "img_003" in page
    # bs1 keeps no per-batch times: the plot shows bs16 only
    assert len(re.findall(r'<img class="plot"', page)) == 2
    assert len(PUBLISHED_THROUGHPUT) == 3


def test_report_without_per_batch_times_says_so(tmp_path):
    work = make_workdir(tmp_path, batches=(4,), sweep=False)
    path = work / "result" / "bs4_summary.json"
    data = summary_format.read_summary(path)
    data.pop("npu_compute_time_list")
    summary_format.write_summary(path, data)
    (work / "drift.json").write_text("{not json")
    proc = run_report(work, "--arch", "B1g4")
    assert proc.returncode == 0, proc.stderr
    page = (work / "report.html").read_text()
    assert len(re.findall(r'<img class="plot"', page)) == 1
    assert "npu_compute_time_list absent" in page
    assert "drift.json could not be read" in page  # named, not silently dropped
    assert "RepVGG-B1g4" in page and "not shown" in page  # no published A0 figures for another variant
    assert "8,752" not in page


def test_report_names_the_checkpoint_and_its_official_status(tmp_path):
    work = make_workdir(tmp_path, batches=(1,), sweep=False)
    checkpoint = work / "model.pth"
    checkpoint.write_bytes(b"not an official checkpoint")
    proc = run_report(work, "--arch", "A0")
    assert proc.returncode == 0, proc.stderr
    model = {r[0][0]: r[1][0] for r in html_tables(work / "report.html")["Model"]}
    import hashlib

    assert model["sha256"] == hashlib.sha256(b"not an official checkpoint").hexdigest()
    assert model["official release"].startswith("no")
    assert model["variant"] == "RepVGG-A0"
    assert model["published top-1 / top-5"].startswith("72.41% / 90.51%")


def test_report_bad_input_is_one_line(tmp_path):
    assert_one_line_error(run_report(tmp_path / "missing"), 2, "not found")
    assert_one_line_error(run_report(tmp_path), 2, "no *_summary.json")
    work = make_workdir(tmp_path, batches=(1,), sweep=False)
    assert_one_line_error(run_report(work, "--chip", "910"), 2, "unknown chip")
    assert_one_line_error(run_report(work, "--checkpoint", tmp_path / "none.pth"), 2, "checkpoint not found")
    (work / "batch_agreement.json").write_text("[1]")
    assert_one_line_error(run_report(work), 2, "batch agreement")
    (work / "batch_agreement.json").unlink()
    shutil.rmtree(work / "result" / "bs1")
    (work / "result" / "bs1_summary.json").write_text("{}")
    assert_one_line_error(run_report(work), 2, "throughput")


def test_pipeline_batch_sizes_take_commas_and_spaces_and_refuse_repeats(tmp_path):
    def pipeline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "run_pipeline.sh"), "--backend", "tpu", *args],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)

    # a valid list gets as far as the next check (the bad --backend), a bad one stops at the list
    assert_one_line_error(pipeline("--batch-sizes", "1, 4,8 16"), 2, "--backend")
    assert_one_line_error(pipeline("--batch-sizes", "1,16,1"), 2, "batch size 1 is given twice")
    assert_one_line_error(pipeline("--batch-sizes", "1,x"), 2, "positive integers")
