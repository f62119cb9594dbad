"""Recognising the officially released RepVGG checkpoints by their sha256.

`official_checkpoints.tsv` ships inside the package (a copy of ../shared/data's table of
facts): file name, sha256, size, variant, published top-1 and independently re-measured
top-5. A user who converts one of those files is told which release it is and what accuracy
the pipeline should reproduce.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class OfficialCheckpoint:
    file_name: str
    sha256: str
    size: int
    variant: str
    top1: str  # as published, e.g. "72.41" or "81.82@224;83.55@320"
    top5: str  # "-" when nobody re-measured it


@cache
def official_checkpoints() -> tuple[OfficialCheckpoint, ...]:
    """The table, parsed once."""
    text = resources.files("repvgg_model").joinpath("official_checkpoints.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return tuple(OfficialCheckpoint(r["file"], r["sha256"].lower(), int(r["bytes"]), r["variant"], r["top1"], r["top5"])
                 for r in rows)


def sha256_of(path: Path | str, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def identify_official(path: Path | str) -> OfficialCheckpoint | None:
    """The official release `path` is, or None. Hashes only files whose size matches a release."""
    size = Path(path).stat().st_size
    candidates = [c for c in official_checkpoints() if c.size == size]
    if not candidates:
        return None
    digest = sha256_of(path)
    return next((c for c in candidates if c.sha256 == digest), None)
