"""The report a person reads: `WORKDIR/report.html` (tables and plots, one offline file) and `WORKDIR/report.md`.

Everything comes from the run's own files, read through their format modules so the
report shows exactly the figures those files hold: each `result/*_summary.json`
(formats/summary.py and formats/perf.py: throughput, compute-time statistics, the
per-batch times of `npu_compute_time_list`), each `result_{run}.json` (formats/result.py:
accuracy), `batch_agreement.json` (report_sweep.py: batch sizes whose outputs are the
same, so accuracy was computed once) and `drift.json` (compare.py) when present.
Published figures (the ModelZoo RepVGG-A0 README, the official checkpoint table) are
shown beside ours, always marked as published and measured on other hardware.
"""

from __future__ import annotations

import base64
import html
import json
import math
import platform
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from repvgg_pipeline import atomic, plots, report_sweep
from repvgg_pipeline.cli import fail, first_line
from repvgg_pipeline.formats import summary as summary_format
from repvgg_pipeline.formats.perf import DEVICES_PER_CARD, card_fps, normalise_chip, read_perf
from repvgg_pipeline.formats.perf import _batch_from_args as batch_and_model
from repvgg_pipeline.formats.result import read_result
from repvgg_pipeline.report import Row, format_table
from repvgg_pipeline.report import _accuracy as accuracy_fraction

RESULT_DIR = "result"
DRIFT_FILE = "drift.json"
HTML_NAME = "report.html"
MD_NAME = "report.md"

# ModelZoo RepVGG README (Ascend ModelZoo-PyTorch, ACL_PyTorch/contrib/cv/classfication/RepVGG): RepVGG-A0,
# 50,000 ImageNet val images. Throughput in images/s per card; a 310 card has four chips.
PUBLISHED_VARIANT = "RepVGG-A0"
PUBLISHED_THROUGHPUT = {
    "310P card": {1: 1919.0, 16: 8752.0},
    "310 card": {1: 1112.0, 16: 7115.0},
    "T4": {1: 1128.0, 16: 4784.0},
}
PUBLISHED_TOP1 = {".pth (PyTorch)": 72.418, "OM on 310P": 72.15}
PUBLISHED_SOURCE = "Ascend ModelZoo RepVGG README (RepVGG-A0)"
FULL_VAL_IMAGES = 50000


# ---------------------------------------------------------------- what the report holds

@dataclass
class RunReport:
    """One inference run: its summary, and its accuracy (own, or that of an equal batch size)."""

    name: str  # the dump folder's name, e.g. "bs16"
    summary_file: Path
    backend: str
    backend_device: str
    model: str
    batch: int | None
    fps: float  # per device, as the summary's `throughput`
    compute: dict  # NPU_compute_time statistics as the summary holds them
    samples_ms: list[float] | None  # per-batch compute times, when the summary keeps them
    result_file: Path | None = None
    result: dict | None = None
    accuracy_from: str = ""  # "" = own result file; else the run whose accuracy applies and why

    def top(self, k: int) -> str:
        """Top-k accuracy exactly as result.json writes it ("72.15%"), else from its metrics; "n/a" without."""
        if self.result is None:
            return "n/a"
        text = self.result["table"].get(f"Top{k} accuracy")
        if text is not None:
            return str(text)
        value = (self.result.get("metrics") or {}).get(f"top{k}")
        return f"{value * 100:.2f}%" if isinstance(value, int | float) else "n/a"

    def top_fraction(self, k: int) -> float | None:
        return None if self.result is None else accuracy_fraction(self.result, k)

    @property
    def images(self) -> int | None:
        if self.result is None:
            return None
        count = (self.result.get("metrics") or {}).get("images", self.result["table"].get("Number of images"))
        try:
            return int(count)
        except (TypeError, ValueError):
            return None


@dataclass
class ModelInfo:
    variant: str
    checkpoint: Path | None
    sha256: str | None = None
    size: int | None = None
    official: Any = None  # repvgg_model.official.OfficialCheckpoint
    variant_release: Any = None  # the official release of this variant, for its published accuracy
    problem: str = ""


@dataclass
class ReportData:
    workdir: Path
    model: ModelInfo
    runs: list[RunReport]
    chip: str | None
    agreements: list[dict]
    drift: dict | None
    drift_problem: str
    environment: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    generated: str = ""


# ---------------------------------------------------------------- reading the work folder

def _backend_of(data: dict, model: str) -> tuple[str, str]:
    """(backend, device) from a summary's args: infer.py records them; the real ais_bench CLI stores sys.argv."""
    args = data.get("args")
    if isinstance(args, dict) and args.get("backend"):
        return str(args["backend"]), str(args.get("backend_device") or "")
    if isinstance(args, list) or model.endswith(".om"):
        return "ais_bench", "NPU"
    return ("onnxruntime", "") if model.endswith(".onnx") else ("unknown", "")


def _model_of(data: dict) -> str:
    """The model path in a summary's args (infer.py's dict or the real CLI's argv), as parse_perf.py reads it."""
    return batch_and_model(data.get("args"))[1] or ""


def per_batch_times(data: dict) -> list[float] | None:
    """`npu_compute_time_list` as ms per batch: floats, or (start, end) pairs in ais_bench's multi-thread mode."""
    raw = data.get("npu_compute_time_list")
    if not isinstance(raw, list) or not raw:
        return None
    times = []
    for item in raw:
        if isinstance(item, int | float) and not isinstance(item, bool):
            times.append(float(item))
        elif isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, int | float) for v in item):
            times.append(float(item[1]) - float(item[0]))
        else:
            return None
    times = [t for t in times if math.isfinite(t) and t >= 0]
    return times or None


def _read_run(summary_file: Path, workdir: Path) -> RunReport:
    data = summary_format.read_summary(summary_file)
    perf = read_perf(summary_file)
    name = summary_file.name[:-len(summary_format.SUMMARY_SUFFIX)] if summary_file.name.endswith(
        summary_format.SUMMARY_SUFFIX) else summary_file.stem
    model = _model_of(data)
    backend, device = _backend_of(data, model)
    compute = data.get("NPU_compute_time") if isinstance(data.get("NPU_compute_time"), dict) else {}
    run = RunReport(name, summary_file, backend, device, model, perf.batch_size, perf.per_device_fps, compute,
                    per_batch_times(data))
    result_file = workdir / f"result_{name}.json"
    if result_file.is_file():
        run.result_file, run.result = result_file, read_result(result_file)
    return run


def _apply_agreements(runs: list[RunReport], agreements: list[dict]) -> None:
    """A run without its own result.json takes the reference's accuracy when the sweep found their top-5 equal."""
    by_name = {run.name: run for run in runs}
    for agreement in agreements:
        reference = by_name.get(agreement["reference"])
        for comparison in agreement["comparisons"]:
            run = by_name.get(comparison["name"])
            if run is None or reference is None:
                continue
            if comparison.get("equal") and run.result is None and reference.result is not None:
                run.result, run.result_file = reference.result, reference.result_file
                run.accuracy_from = f"= {reference.name} (same top-5 for every image)"
            elif not comparison.get("equal"):
                run.accuracy_from = (f"differs from {reference.name}: top-1 changed on {comparison['top1_changed']} "
                                     f"of {comparison['images']} images")


def _apply_drift_accuracy(runs: list[RunReport], drift: dict) -> None:
    """Runs scored only by compare.py (the PyTorch reference, the FP16 preview) take their accuracy from drift.json.

    A pair names its dump folder in `source`; its `accuracy` holds both sides' top-1/top-5 as fractions.
    """
    by_name = {run.name: run for run in runs}
    reference_name = str(drift.get("reference", ""))
    if drift.get("reference_source"):  # the dump folder (torch_bs16), which is what runs are named by
        reference_name = Path(str(drift["reference_source"])).name
    for pair in drift["pairs"]:
        accuracy = pair.get("accuracy")
        if not isinstance(accuracy, dict):
            continue
        sides = [(Path(str(pair.get("source", ""))).name, accuracy.get("other")),
                 (reference_name, accuracy.get("reference"))]
        for folder, side in sides:
            run = by_name.get(folder)
            if run is None or run.result is not None or not isinstance(side, dict):
                continue
            table = {f"Top{k} accuracy": _frac(side.get(f"top{k}")) for k in (1, 5)}
            run.result = {"table": {"Number of images": str(accuracy.get("images")), **table},
                          "metrics": {"images": accuracy.get("images"), "top1": side.get("top1"),
                                      "top5": side.get("top5")}}
            run.accuracy_from = f"{DRIFT_FILE} (compare.py)"


def _run_order(run: RunReport) -> tuple:
    return run.backend, run.batch if run.batch is not None else 1 << 30, run.name


def read_runs(workdir: Path) -> list[RunReport]:
    folder = workdir / RESULT_DIR
    files = sorted(folder.glob(f"*{summary_format.SUMMARY_SUFFIX}")) if folder.is_dir() else []
    if not files:
        raise fail(f"no *{summary_format.SUMMARY_SUFFIX} in {folder}: run infer.py (or the pipeline) into "
                   f"{folder} first")
    return sorted((_read_run(f, workdir) for f in files), key=_run_order)


def read_drift(workdir: Path) -> tuple[dict | None, str]:
    """compare.py's `{"reference", "pairs": [...]}`, or None; a file that is there but unusable is named, not fatal."""
    path = workdir / DRIFT_FILE
    if not path.exists():
        return None, ""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path} could not be read: {first_line(err)}"
    if not isinstance(data, dict) or not isinstance(data.get("pairs"), list):
        return None, f"{path} is not a compare.py drift file (no 'pairs' list)"
    data["pairs"] = [p for p in data["pairs"] if isinstance(p, dict)]
    return data, ""


def model_info(checkpoint: Path | None, arch: str | None) -> ModelInfo:
    """Variant, sha256 and official release of the checkpoint; what cannot be known is said, not guessed."""
    from repvgg_model.official import identify_official, official_checkpoints, sha256_of

    info = ModelInfo(arch or "unknown", checkpoint)
    if checkpoint is not None:
        try:
            info.size = checkpoint.stat().st_size
            info.sha256 = sha256_of(checkpoint)
            info.official = identify_official(checkpoint)
        except OSError as err:
            info.problem = f"cannot read {checkpoint}: {err.strerror or err}"
        if arch is None and not info.problem:
            try:
                from repvgg_model.checkpoint import load_checkpoint

                info.variant = load_checkpoint(checkpoint).variant.name
            except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: say so in the report
                info.problem = f"variant not recognised: {first_line(err)}"
    if arch is not None:
        from repvgg_model.variants import get_variant

        try:
            info.variant = get_variant(arch).name
        except Exception:  # noqa: BLE001 - keep the name as given
            info.variant = arch
    if info.official is not None:
        info.variant = info.official.variant
    info.variant_release = next((c for c in official_checkpoints() if c.variant == info.variant), None)
    return info


def _find_checkpoint(workdir: Path) -> Path | None:
    """The one `.pth` in the work folder (the demo writes its checkpoint there), else None."""
    found = sorted(p for p in workdir.glob("*.pth") if p.is_file())
    return found[0] if len(found) == 1 else None


def npu_chip() -> str:
    """The chip name in `npu-smi info` ("310P3"), "" without npu-smi or when it fails."""
    if shutil.which("npu-smi") is None:
        return ""
    try:
        proc = subprocess.run(["npu-smi", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    match = re.search(r"^\|\s*\d+\s+(?:Ascend)?(310P?[A-Za-z0-9]*)\s*\|", proc.stdout, re.MULTILINE)
    return match.group(1) if match else ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(runs: Sequence[RunReport]) -> list[tuple[str, str]]:
    """Where the report was made: host, OS, CPU, backends and their devices, package versions, NPU chip."""
    import os

    versions = []
    for package in ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "matplotlib", "ais_bench",
                    "aclruntime"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    backends = sorted({f"{r.backend}" + (f" on {r.backend_device}" if r.backend_device else "") for r in runs})
    chip = npu_chip()
    return [
        ("host", platform.node() or "?"),
        ("OS", platform.platform()),
        ("CPU", f"{_cpu_name()} ({os.cpu_count()} logical cores)"),
        ("backends", ", ".join(backends)),
        ("NPU (npu-smi)", f"Ascend {chip}" if chip else "none (npu-smi not found or not working)"),
        ("Python", platform.python_version()),
        ("packages", ", ".join(versions)),
    ]


def collect(workdir: Path, checkpoint: Path | None = None, arch: str | None = None, chip: str | None = None,
            notes: Iterable[str] = ()) -> ReportData:
    """Read everything the report shows from `workdir`."""
    workdir = Path(workdir).absolute()
    if not workdir.is_dir():
        raise fail(f"work folder {'is not a folder' if workdir.exists() else 'not found'}: {workdir}")
    if checkpoint is not None and not checkpoint.is_file():
        raise fail(f"checkpoint not found: {checkpoint}")
    runs = read_runs(workdir)
    agreements = report_sweep.read_agreements(workdir / report_sweep.AGREEMENT_FILE)
    _apply_agreements(runs, agreements)
    drift, drift_problem = read_drift(workdir)
    if drift is not None:
        _apply_drift_accuracy(runs, drift)
    chip = normalise_chip(chip) if chip else None
    data = ReportData(workdir, model_info(checkpoint or _find_checkpoint(workdir), arch), runs, chip, agreements,
                      drift, drift_problem, environment(runs), list(notes),
                      datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    data.notes += automatic_notes(data)
    return data


def automatic_notes(data: ReportData) -> list[str]:
    """What a reader must know to read the figures right."""
    notes = []
    counts = {run.images for run in data.runs if run.images is not None}
    if counts and max(counts) < FULL_VAL_IMAGES:
        notes.append(f"Accuracy is over {max(counts)} images; the published figures are over the {FULL_VAL_IMAGES:,} "
                     "ImageNet validation images.")
    if any(run.backend != "ais_bench" for run in data.runs):
        notes.append("Throughput of the non-Ascend backends is measured on this machine (see Environment): it is "
                     "not an Ascend figure, and the published ones were measured on other hardware.")
    if data.model.variant != PUBLISHED_VARIANT:
        notes.append(f"The ModelZoo publishes Ascend and T4 figures for {PUBLISHED_VARIANT} only; this model is "
                     f"{data.model.variant}, so they are not shown.")
    padded = [run.name for run in data.runs if run.batch and run.images and run.images % run.batch]
    if padded:
        notes.append(f"Runs with a padded last batch ({', '.join(padded)}): as in ais_bench, throughput counts the "
                     "padding rows (1000 x batch / mean compute ms).")
    if data.drift_problem:
        notes.append(data.drift_problem)
    return notes


# ---------------------------------------------------------------- numbers as text

def _ms(stats: dict, *keys: str) -> str:
    for key in keys:
        value = stats.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:.3f}"
    return "n/a"


def _fps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _frac(value: Any, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%" if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def _num(value: Any, fmt: str = ".3g") -> str:
    return format(value, fmt) if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


def run_card_fps(run: RunReport, chip: str | None) -> float | None:
    return card_fps(run.fps, chip) if chip and run.backend == "ais_bench" else None


def _published_at(batch: int | None) -> str:
    figures = [f"{name} {points[batch]:,.0f}" for name, points in PUBLISHED_THROUGHPUT.items()
               if batch in points]
    return "; ".join(figures) if figures else "-"


# ---------------------------------------------------------------- tables (shared by markdown and HTML)

@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    exact: list[list[str]] = field(default_factory=list)  # per cell: the unrounded value (HTML data-exact)
    caption: str = ""


def model_table(data: ReportData) -> Table:
    m = data.model
    rows = [["variant", m.variant],
            ["checkpoint", str(m.checkpoint) if m.checkpoint else "not given (pass --checkpoint)"]]
    if m.sha256:
        rows.append(["sha256", m.sha256])
        rows.append(["size", f"{m.size:,} bytes"])
    if m.checkpoint is not None and not m.problem:
        rows.append(["official release", f"yes: {m.official.file_name}" if m.official else
                     "no (sha256 not in the table of official RepVGG checkpoints)"])
    if m.problem:
        rows.append(["problem", m.problem])
    release = m.official or m.variant_release
    if release is not None:
        which = "this checkpoint" if m.official else f"official {release.variant} release {release.file_name}"
        rows.append(["published top-1 / top-5", f"{release.top1}% / {release.top5}% ({which}; top-5 re-measured "
                                                 "by timm)" if release.top5 != "-" else f"{release.top1}% ({which})"])
    if m.variant == PUBLISHED_VARIANT:
        rows.append(["published top-1 (ModelZoo)",
                     "; ".join(f"{k} {v}%" for k, v in PUBLISHED_TOP1.items()) + " (Ascend ModelZoo RepVGG README)"])
    return Table("Model", ["", ""], rows)


def accuracy_table(data: ReportData) -> Table:
    rows, exact = [], []
    for run in data.runs:
        source = run.accuracy_from or (run.result_file.name if run.result_file else "not computed")
        rows.append([run.backend, str(run.batch or "?"), str(run.images or "n/a"), run.top(1), run.top(5), source])
        exact.append(["", "", "", repr(run.top_fraction(1)), repr(run.top_fraction(5)), ""])
    release = data.model.official or data.model.variant_release
    if release is not None:
        rows.append([f"published: {release.file_name}", "-", f"{FULL_VAL_IMAGES:,}", f"{release.top1}%",
                     f"{release.top5}%" if release.top5 != "-" else "n/a", "RepVGG authors (top-5: timm)"])
    if data.model.variant == PUBLISHED_VARIANT:
        for name, top1 in PUBLISHED_TOP1.items():
            rows.append([f"published: {name}", "-", f"{FULL_VAL_IMAGES:,}", f"{top1}%", "n/a", PUBLISHED_SOURCE])
    return Table("Accuracy per backend and batch size", ["backend", "batch", "images", "top-1", "top-5",
                                                          "accuracy from"], rows, exact)


def agreement_lines(data: ReportData) -> list[str]:
    return [f"{a.get('backend', '?')}: " + report_sweep.describe(c, a["reference"])
            for a in data.agreements for c in a["comparisons"]]


def drift_table(data: ReportData) -> Table | None:
    if data.drift is None:
        return None
    rows = []
    for pair in data.drift["pairs"]:
        accuracy = pair.get("accuracy") if isinstance(pair.get("accuracy"), dict) else {}
        diff = accuracy.get("top1_diff", accuracy.get("top1_difference"))
        flipped = pair.get("flipped") if isinstance(pair.get("flipped"), list) else []
        sides = [accuracy.get(side) if isinstance(accuracy.get(side), dict) else {} for side in ("reference", "other")]
        top1 = (f"{_frac(sides[0].get('top1'))} -> {_frac(sides[1].get('top1'))}"
                if sides[0].get("top1") is not None else "n/a")
        rows.append([str(pair.get("name", "?")), str(pair.get("images", "n/a")), _frac(pair.get("top1_agreement")),
                     _frac(pair.get("top5_agreement")), _num(pair.get("cosine_min"), ".6f"),
                     _num(pair.get("cosine_mean"), ".6f"), _num(pair.get("max_abs_diff")),
                     _num(pair.get("max_rel_diff")), top1, _frac(diff, 3) if diff is not None else "n/a",
                     _num(pair.get("mcnemar_p")), str(len(flipped))])
    return Table(f"Accuracy drift against {data.drift.get('reference', '?')} (compare.py)",
                 ["compared", "images", "top-1 agreement", "top-5 agreement", "cosine min", "cosine mean",
                  "max |diff|", "max |diff| / max |logit|", "top-1 accuracy", "top-1 accuracy diff", "McNemar p",
                  "top-1 flips"], rows)


def throughput_table(data: ReportData) -> Table:
    chip = data.chip
    header = ["backend", "device", "batch", "batches", "compute ms mean", "median", "p99",
              "throughput per device (img/s)"]
    if chip:
        header.append(f"per {chip} card, x{DEVICES_PER_CARD[chip]} (img/s)")
    header.append("published at this batch (RepVGG-A0, other hardware)")
    rows, exact = [], []
    for run in data.runs:
        count = run.compute.get("count")
        row = [run.backend, run.backend_device or "-", str(run.batch or "?"), str(count if count is not None else "?"),
               _ms(run.compute, "mean"), _ms(run.compute, "median"),
               _ms(run.compute, summary_format.PERCENTILE_KEY, "P99"), _fps(run.fps)]
        cells = [""] * 7 + [repr(run.fps)]
        if chip:
            card = run_card_fps(run, chip)
            row.append(_fps(card))
            cells.append(repr(card) if card is not None else "")
        row.append(_published_at(run.batch) if data.model.variant == PUBLISHED_VARIANT else "-")
        cells.append("")
        rows.append(row)
        exact.append(cells)
    return Table("Throughput per batch size", header, rows, exact,
                 "compute-only, as ais_bench reports it: 1000 x batch / mean compute ms per batch; "
                 "310 card = 4 chips, 310P card = 1.")


def published_table(data: ReportData) -> Table | None:
    if data.model.variant != PUBLISHED_VARIANT:
        return None
    batches = sorted({b for points in PUBLISHED_THROUGHPUT.values() for b in points})
    rows = [[name] + [f"{points[b]:,.0f}" if b in points else "-" for b in batches]
            for name, points in PUBLISHED_THROUGHPUT.items()]
    return Table("Published throughput (other hardware)", ["hardware"] + [f"batch {b} (img/s)" for b in batches],
                 rows, caption=f"{PUBLISHED_SOURCE}; per card.")


def environment_table(data: ReportData) -> Table:
    rows = [[k, v] for k, v in data.environment]
    rows.append(["card arithmetic", f"chip {data.chip}" if data.chip else "no chip given (--chip 310 or 310P)"])
    rows.append(["report written", data.generated])
    return Table("Environment", ["", ""], rows)


def closing_rows(data: ReportData) -> list[Row]:
    """The rows of the pipeline's closing table (repvgg_pipeline.report), one per run."""
    return [Row(data.model.variant, run.backend, run.batch or 0, run.top_fraction(1), run.top_fraction(5), run.images,
                run.fps, run_card_fps(run, data.chip) if data.chip else None) for run in data.runs]


def tables(data: ReportData) -> list[Table]:
    found = [model_table(data), accuracy_table(data), drift_table(data), throughput_table(data),
             published_table(data), environment_table(data)]
    return [t for t in found if t is not None]


# ---------------------------------------------------------------- markdown

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    lines = [f"## {table.title}", ""]
    header = table.header if any(table.header) else ["item", "value"]
    lines.append("| " + " | ".join(map(_md_cell, header)) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in table.rows]
    if table.caption:
        lines += ["", table.caption]
    return lines + [""]


def render_markdown(data: ReportData) -> str:
    """The closing table first (what run_pipeline.sh prints), then the notes and every section as text."""
    lines = format_table(closing_rows(data), data.chip) + [""] + data.notes + [""]
    lines += [f"Plots: {HTML_NAME} in the same folder.", ""]
    for table in tables(data):
        lines += _md_table(table)
        if table.title.startswith("Accuracy per backend") and agreement_lines(data):
            lines += ["Batch sizes compared (report_sweep.py):", ""] + [f"- {x}" for x in agreement_lines(data)] + [""]
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------- HTML

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.published td { color: #a01818; font-style: italic; }
.kv td:first-child { font-weight: 600; white-space: nowrap; }
.caption, .muted { color: #666; font-size: 0.85em; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.6em 1em; white-space: pre-wrap;
         font-size: 0.9em; }
figure { margin: 1em 0; }
figure img.plot { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
code { font-size: 0.9em; }
"""

_NUMERIC = re.compile(r"^[\d,.%+\-e ]+$|^n/a$")


def _html_table(table: Table, css: str = "") -> str:
    parts = [f"<table class=\"{css}\">" if css else "<table>"]
    if any(table.header):
        parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.header) + "</tr>")
    for index, row in enumerate(table.rows):
        published = row and row[0].startswith("published")
        exact = table.exact[index] if index < len(table.exact) else []
        cells = []
        for col, cell in enumerate(row):
            attrs = " class=\"num\"" if css != "kv" and _NUMERIC.match(cell) else ""
            if col < len(exact) and exact[col] and exact[col] != "None":
                attrs += f" data-exact=\"{html.escape(exact[col])}\""
            cells.append(f"<td{attrs}>{html.escape(cell)}</td>")
        parts.append(("<tr class=\"published\">" if published else "<tr>") + "".join(cells) + "</tr>")
    parts.append("</table>")
    if table.caption:
        parts.append(f"<p class=\"caption\">{html.escape(table.caption)}</p>")
    return "\n".join(parts)


def _figure(svg: str, alt: str, caption: str, plot_id: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f"<figure><img class=\"plot\" id=\"{plot_id}\" alt=\"{html.escape(alt)}\" "
            f"src=\"data:image/svg+xml;base64,{data}\">"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def throughput_plot(data: ReportData) -> str:
    series: dict[str, dict[int, float]] = {}
    for run in data.runs:
        if run.batch is None:
            continue
        label = run.backend + (f" on {run.backend_device}" if run.backend_device else "") + " per device"
        if run.batch in series.get(label, {}):  # a second run of one backend at one batch size: its own line
            label = f"{label} ({run.name})"
        series.setdefault(label, {})[run.batch] = run.fps
        card = run_card_fps(run, data.chip)
        if card is not None:
            series.setdefault(f"{run.backend}, {data.chip} card", {})[run.batch] = card
    published = ([plots.PublishedPoints(name, points) for name, points in PUBLISHED_THROUGHPUT.items()]
                 if data.model.variant == PUBLISHED_VARIANT else [])
    return plots.throughput_figure([plots.Series(k, v) for k, v in series.items()], published,
                                   f"{data.model.variant}: throughput vs batch size")


def compute_time_plot(data: ReportData) -> str | None:
    runs = [plots.TimeSamples(f"{run.backend}\nbatch {run.batch}", run.batch or 0, run.samples_ms)
            for run in data.runs if run.samples_ms]
    return plots.compute_time_figure(runs, "Compute time per batch") if runs else None


def render_html(data: ReportData) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, no script, nothing fetched."""
    title = f"{data.model.variant} offline inference report"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class=\"muted\">Work folder <code>{html.escape(str(data.workdir))}</code>; written "
            f"{html.escape(data.generated)}. Figures from the run's summaries and result.json files; "
            "<span style=\"color:#a01818\">published figures in red italics, measured on other hardware</span>.</p>"]
    if data.notes:
        body.append("<div class=\"notes\">" + html.escape("\n".join(data.notes)) + "</div>")
    for table in tables(data):
        body.append(f"<h2>{html.escape(table.title)}</h2>")
        body.append(_html_table(table, "kv" if not any(table.header) else ""))
        if table.title.startswith("Accuracy per backend"):
            lines = agreement_lines(data)
            if lines:
                body.append("<p>Batch sizes compared:</p><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines)
                            + "</ul>")
        if table.title.startswith("Accuracy drift"):
            body.append(_flip_list(data))
        if table.title.startswith("Throughput"):
            body.append(_figure(throughput_plot(data), "throughput vs batch size",
                                "Lines and dots: this run. Hollow red markers: published RepVGG-A0 figures "
                                "(Ascend ModelZoo RepVGG README), per card, measured on other hardware."
                                if data.model.variant == PUBLISHED_VARIANT else "Lines and dots: this run.",
                                "plot-throughput"))
            times = compute_time_plot(data)
            if times is not None:
                body.append(_figure(times, "compute time per batch", "Every batch's compute time (ms) from the "
                                    "summaries' npu_compute_time_list; boxes: quartiles, line: median.",
                                    "plot-compute-times"))
            else:
                body.append("<p class=\"muted\">No per-batch compute times in the summaries "
                            "(npu_compute_time_list absent): only their statistics are shown.</p>")
    page = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>", *body,
            "</body></html>"]
    return "\n".join(page) + "\n"


def _flip_list(data: ReportData, limit: int = 20) -> str:
    """The first images whose top-1 changed in each drift pair (compare.py's `flipped`)."""
    if data.drift is None:
        return ""
    parts = []
    for pair in data.drift["pairs"]:
        flipped = [f for f in (pair.get("flipped") or []) if isinstance(f, dict)]
        if not flipped:
            continue
        items = "".join(f"<li><code>{html.escape(str(f.get('image')))}</code>: {html.escape(str(f.get('reference')))}"
                        f" &rarr; {html.escape(str(f.get('other')))} (label {html.escape(str(f.get('label')))})</li>"
                        for f in flipped[:limit])
        more = f"<li>... and {len(flipped) - limit} more</li>" if len(flipped) > limit else ""
        parts.append(f"<details><summary>{html.escape(str(pair.get('name')))}: {len(flipped)} images changed top-1"
                     f"</summary><ul>{items}{more}</ul></details>")
    return "".join(parts)


def write_report(data: ReportData) -> tuple[Path, Path]:
    """Write report.html and report.md into the work folder (atomically); return their paths."""
    html_path, md_path = data.workdir / HTML_NAME, data.workdir / MD_NAME
    page, text = render_html(data), render_markdown(data)
    for path, content in ((html_path, page), (md_path, text)):
        try:
            atomic.write_text(path, content)
        except OSError as err:
            raise fail(f"cannot write {path}: {err.strerror or err}") from None
    return html_path, md_path
