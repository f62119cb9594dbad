"""The report's figures, drawn with matplotlib (Agg, no display) and returned as SVG text.

SVG keeps the figures sharp at any zoom and small (text drawn as paths, so no font is
fetched or needed by the browser); `report_html.py` inlines them as `data:` URIs, which
keeps report.html one self-contained file that opens offline.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PUBLISHED_MARKERS = ("D", "s", "^", "v", "P", "X")
OURS_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22")
PUBLISHED_COLOUR = "#d62728"
MAX_POINTS = 400  # per-batch samples drawn as dots per run; the box summarises all of them


@dataclass(frozen=True)
class Series:
    """One measured line: throughput (images/s) at each batch size."""

    label: str
    points: Mapping[int, float]  # batch size -> images/s


@dataclass(frozen=True)
class PublishedPoints:
    """Figures someone published for other hardware: drawn as hollow markers, never joined to ours."""

    label: str
    points: Mapping[int, float]


@dataclass(frozen=True)
class TimeSamples:
    """The per-batch compute times (ms) of one run."""

    label: str
    batch_size: int
    samples_ms: Sequence[float]


def _svg(figure: Figure) -> str:
    """The figure as SVG text (the XML declaration and DOCTYPE dropped: the caller embeds it)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "repvgg-report"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def throughput_figure(ours: Sequence[Series], published: Sequence[PublishedPoints], title: str) -> str:
    """Throughput vs batch size (log-log): our runs as lines, published figures as labelled hollow markers."""
    figure, axes = plt.subplots(figsize=(9.0, 5.2), dpi=100)
    batches = sorted({b for s in ours for b in s.points} | {b for p in published for b in p.points})
    values = [v for s in ours for v in s.points.values()] + [v for p in published for v in p.points.values()]
    values = [v for v in values if v > 0]
    for index, series in enumerate(ours):
        colour = OURS_COLOURS[index % len(OURS_COLOURS)]
        xs = sorted(series.points)
        axes.plot(xs, [series.points[x] for x in xs], marker="o", linewidth=2, markersize=6, color=colour,
                  label=f"{series.label} (this run)")
        for x in xs:
            axes.annotate(f"{series.points[x]:,.0f}", (x, series.points[x]), textcoords="offset points",
                          xytext=(0, 8), ha="center", fontsize=8, color=colour)
    for index, pub in enumerate(published):
        xs = sorted(pub.points)
        dodge = _dodge(index, len(published))
        axes.scatter([x * dodge for x in xs], [pub.points[x] for x in xs],
                     marker=PUBLISHED_MARKERS[index % len(PUBLISHED_MARKERS)], s=70, facecolors="none",
                     edgecolors=PUBLISHED_COLOUR, linewidths=1.6, zorder=3,
                     label=f"{pub.label} (published, other hardware)")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    if batches:
        axes.set_xticks(batches, [str(b) for b in batches])
        axes.set_xlim(min(batches) / 1.6, max(batches) * (3.0 if published else 1.6))  # room for the labels
    if values:
        axes.set_ylim(min(values) / 2.5, max(values) * 2.5)
    axes.minorticks_off()
    _label_published(axes, published)
    axes.set_xlabel("batch size")
    axes.set_ylabel("throughput (images/s, log scale)")
    axes.set_title(title, fontsize=11)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    return _svg(figure)


def _dodge(index: int, count: int) -> float:
    """x factor that sets the markers of one batch size side by side, so near-equal published figures stay apart."""
    return 2 ** (0.15 * (index - (count - 1) / 2))


def _label_published(axes, published: Sequence[PublishedPoints], gap_pt: float = 11.0) -> None:
    """Label each published point right of the rightmost marker, pushing near-equal labels apart so none overlap."""
    by_x: dict[int, list[tuple[float, str]]] = {}
    for pub in published:
        for x, y in pub.points.items():
            by_x.setdefault(x, []).append((y, f"{pub.label} {y:,.0f}"))
    points_per_pixel = 72.0 / axes.figure.dpi
    for x, items in by_x.items():
        items.sort(reverse=True)  # top label first
        last_pt = None
        for y, text in items:
            y_pt = axes.transData.transform((x, y))[1] * points_per_pixel
            target = y_pt if last_pt is None else min(y_pt, last_pt - gap_pt)
            axes.annotate(text, (x * _dodge(len(published) - 1, len(published)), y), textcoords="offset points",
                          xytext=(9, target - y_pt - 3), fontsize=8,
                          color=PUBLISHED_COLOUR)
            last_pt = target


def compute_time_figure(runs: Sequence[TimeSamples], title: str) -> str:
    """Box plots of the per-batch compute times of each run, every sample drawn over its box."""
    figure, axes = plt.subplots(figsize=(8.0, 4.2), dpi=100)
    data = [list(run.samples_ms) for run in runs]
    positions = list(range(1, len(runs) + 1))
    axes.boxplot(data, positions=positions, widths=0.5, showfliers=False,
                 medianprops={"color": OURS_COLOURS[0], "linewidth": 2})
    for position, samples in zip(positions, data, strict=True):
        shown = samples[::-(-len(samples) // MAX_POINTS)]  # an even subsample keeps a 50,000-batch run's SVG small
        spread = [position + 0.18 * ((i * 0.618) % 1.0 - 0.5) for i in range(len(shown))]  # deterministic jitter
        axes.scatter(spread, shown, s=8, alpha=0.5, color="#555555", zorder=3)
    labels = [f"{run.label}\nn={len(run.samples_ms)}" for run in runs]
    axes.set_xticks(positions, labels, fontsize=8)
    if any(min(samples) > 0 for samples in data if samples) and _spans_decade(data):
        axes.set_yscale("log")
        axes.set_ylabel("compute time per batch (ms, log scale)")
    else:
        axes.set_ylabel("compute time per batch (ms)")
    axes.set_title(title, fontsize=11)
    axes.grid(True, axis="y", alpha=0.3)
    return _svg(figure)


def _spans_decade(data: Sequence[Sequence[float]]) -> bool:
    values = [v for samples in data for v in samples if v > 0]
    return bool(values) and max(values) / min(values) > 10
