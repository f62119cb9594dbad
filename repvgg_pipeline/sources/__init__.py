"""Where the runner's batches come from: the seam between inputs and backends.

The runner (`repvgg_pipeline.runner`) owns the model side: geometry, batch size,
resume, dumps, summary; a backend (`repvgg_pipeline.backends`) only runs arrays. A
source only produces those arrays, batch by batch, so neither side knows where they
came from:

- `.bin` tensor files, a folder or an info file (`runner.TensorFiles`: the two-step path,
  after preprocess.py);
- images decoded on the fly in worker processes (`sources.images.ImageStream`: streaming,
  no tensor file anywhere).

A new kind of input is one new module implementing `BatchSource`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from repvgg_pipeline.runner import Geometry


class Sample(Protocol):
    """One input as the runner sees it: the stem its dumps are named after and what `filesinfo` lists."""

    @property
    def stem(self) -> str: ...

    @property
    def infile(self) -> str: ...


@dataclass
class Batch:
    """One batch for `Backend.run`: its samples (index in `samples`, sample) and the array (padding rows zeroed).

    `consumed` counts the samples this batch used up, including those that could not be read
    and are missing from `rows` (the progress bar advances by it).
    """

    rows: list[tuple[int, Sample]]
    array: np.ndarray
    consumed: int


class BatchSource(Protocol):
    """A run's inputs, in run order, and the batches made from them."""

    samples: Sequence[Sample]
    failures: list[tuple[str, str]]  # (input name, one-line reason) of inputs that could not be read

    def size_hint(self) -> tuple[int, int] | None:
        """(height, width) the inputs have, for a model whose input size is not fixed; None when unknown."""
        ...

    def check(self, geometry: Geometry) -> None:
        """Fail (`UserError`) before anything runs when these inputs cannot become the model's input."""
        ...

    def batches(self, todo: Sequence[tuple[int, Sample]], batch_size: int, geometry: Geometry,
                overlap: bool) -> Iterator[Batch]:
        """Batches of the `todo` samples, in order. `overlap`: the compute runs off the host CPU, so preparing
        the next batches may run while the caller computes this one (else prepare between computes, with
        every core). A yielded array is not written again before the caller asks for the next batch."""
        ...

    def write_reports(self, output_root: Path) -> Path | None:
        """Write this source's own files beside the results (labels, failures); the failure list's path or None."""
        ...
