"""Throughput of preprocess.py against the ModelZoo way, measured side by side in one run.

    python bench/bench_preprocess.py                 # 1,000 images of ../shared/data/imagenet_one_per_class
    python bench/bench_preprocess.py --limit 200 --rounds 1   # quick look

Cases, each writing into a fresh folder (rewriting files in place costs ext4 extra work that
a fresh run does not pay), interleaved over `--rounds` rounds, median images/s reported:

- reference: what the ModelZoo RepVGG_preprocess.py does per image (open, convert, resize, crop,
  np.array float32, transpose, divide, subtract, divide, tofile), one process;
- floor: Pillow decode + full resize and nothing else (the limit for any exact preprocessing);
- preprocess.py --workers 1 (float32 exact, and --dtype uint8), and --workers 2.

Goals (issue 3): float32 >= 1.3x reference, uint8 >= 1.4x reference, 2 workers >= 1.85x 1 worker.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import preprocess  # noqa: E402
from repvgg_pipeline.cli import run_cli  # noqa: E402
from repvgg_pipeline.dataset import find_images  # noqa: E402
from repvgg_pipeline.transforms import IMAGENET_MEAN, IMAGENET_STD, resized_size  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "imagenet_one_per_class"


def reference_modelzoo(files: list[Path], out_dir: Path) -> None:
    """The ModelZoo script's per-image work (its resize and center_crop, then numpy float math and tofile)."""
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]
    for path in files:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        if not (w <= h and w == 256) and not (h <= w and h == 256):
            image = image.resize((256, int(256 * h / w)) if w < h else (int(256 * w / h), 256), Image.BILINEAR)
        w, h = image.size
        top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
        image = image.crop((left, top, left + 224, top + 224))
        img = np.array(image, dtype=np.float32)
        img = img.transpose(2, 0, 1)
        img = img / 255.0
        img -= mean
        img /= std
        img.tofile(out_dir / (path.name.split(".")[0] + ".bin"))


def floor_decode_resize(files: list[Path], out_dir: Path) -> None:
    """Decode and resize only: what any exact preprocessing has to pay at least."""
    del out_dir
    for path in files:
        with Image.open(path) as image:
            image.load()
            image.resize(resized_size(*image.size, 256), Image.BILINEAR)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers), in seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_preprocess(src: Path, out_dir: Path, *options: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_cli(preprocess.get_args_parser, preprocess.main, [str(src), str(out_dir), *options])
    if code != 0:
        raise SystemExit(f"preprocess.py failed with exit code {code}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (default: 3)")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"bench_preprocess: data not found: {args.data}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp = Path(tmp)
        files = [item.path for item in find_images(args.data).items][: args.limit]
        src = tmp / "src"  # a flat folder holding exactly the chosen images (symlinks)
        src.mkdir()
        for path in files:
            (src / path.name).symlink_to(path.resolve())
        for path in files:  # page cache warm for every case
            path.read_bytes()
        n = len(files)

        cases: dict[str, Callable[[Path], None]] = {
            "reference (ModelZoo per-image numpy)": lambda out: reference_modelzoo(files, out),
            "floor (decode + resize only)": lambda out: floor_decode_resize(files, out),
            "preprocess float32 --workers 1": lambda out: run_preprocess(src, out, "--workers", "1"),
            "preprocess uint8 --workers 1": lambda out: run_preprocess(src, out, "--workers", "1", "--dtype", "uint8"),
            "preprocess float32 --workers 2": lambda out: run_preprocess(src, out, "--workers", "2"),
        }
        rates: dict[str, list[float]] = {name: [] for name in cases}
        cpu_rates: dict[str, list[float]] = {name: [] for name in cases}
        for round_no in range(args.rounds):
            for case_no, (name, run) in enumerate(cases.items()):
                out = tmp / f"out_{round_no}_{case_no}"
                out.mkdir()
                cpu_before = cpu_seconds()
                start = time.perf_counter()
                run(out)
                rates[name].append(n / (time.perf_counter() - start))
                cpu_rates[name].append(n / (cpu_seconds() - cpu_before))
                shutil.rmtree(out)

    med = {name: statistics.median(values) for name, values in rates.items()}
    cpu_med = {name: statistics.median(values) for name, values in cpu_rates.items()}
    print(f"bench_preprocess: {n} images from {args.data}, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load average before {os.getloadavg()[0]:.2f}")
    print(f"  {'case':<40} {'images/s':>10} {'per CPU-s':>10}  wall-clock rounds")
    for name, value in med.items():
        spread = ", ".join(f"{v:.0f}" for v in rates[name])
        print(f"  {name:<40} {value:10.1f} {cpu_med[name]:10.1f}  ({spread})")
    ref = med["reference (ModelZoo per-image numpy)"]
    one = med["preprocess float32 --workers 1"]
    checks = [
        ("float32 exact, 1 worker / reference", one / ref, 1.3),
        ("uint8, 1 worker / reference", med["preprocess uint8 --workers 1"] / ref, 1.4),
        ("float32, 2 workers / 1 worker", med["preprocess float32 --workers 2"] / one, 1.85),
        ("floor (decode+resize) / reference", med["floor (decode + resize only)"] / ref, None),
    ]
    for label, ratio, goal in checks:
        verdict = "" if goal is None else f"  goal >= {goal:.2f}x: {'met' if ratio >= goal else 'NOT met'}"
        print(f"  {label:<40} {ratio:6.2f}x{verdict}")
    # CPU time is not disturbed by other processes on a shared machine: a cross-check of the wall-clock ratios
    cpu_ref = cpu_med["reference (ModelZoo per-image numpy)"]
    cpu_one, cpu_two = cpu_med["preprocess float32 --workers 1"], cpu_med["preprocess float32 --workers 2"]
    print(f"  CPU-time ratios: float32/reference {cpu_one / cpu_ref:.2f}x, "
          f"uint8/reference {cpu_med['preprocess uint8 --workers 1'] / cpu_ref:.2f}x; "
          f"CPU time per image, 2 workers / 1 worker: {cpu_one / cpu_two:.2f} (1.00 = no parallel overhead; "
          f"on 2 otherwise idle cores that bounds the 2-worker speedup at {2 * cpu_two / cpu_one:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
