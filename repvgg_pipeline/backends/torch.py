"""PyTorch reference backend: the training checkpoint itself, run as the training code runs it.

It answers "does the exported model give the same answers as the training code?": the
checkpoint is read by the very loader pth2onnx.py uses (`repvgg_model.load_checkpoint`, so
official, timm and mmpretrain checkpoints, `--arch`, `--use-ema` behave alike) and run
*unfused* (train-time branches, as stored), float32, eval mode, under `torch.inference_mode`.
Its dumps and summary are the runner's, the same as every other backend's, so postprocess.py
and compare.py read them unchanged.

On a CUDA machine the model runs on the GPU with TF32 switched off (cuDNN and matmul): TF32
rounds inputs to 10 mantissa bits, which would make the "float32 reference" a reduced-precision
run. Copies to and from the device are timed apart from the compute, as ais_bench does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from repvgg_pipeline.backends.base import BatchTiming, InputSpec
from repvgg_pipeline.cli import fail, first_line
from repvgg_pipeline.formats.tensors import FLOAT32_CHW

OUTPUT_NAME = "output1"  # the name pth2onnx.py gives the logits, so dumps line up with the ONNX run


class TorchBackend:
    """A RepVGG training checkpoint loaded into the train-time PyTorch model (float32, eval)."""

    name = "torch"

    def __init__(self, model_path: Path | str, device: int = 0, threads: int | None = None, arch: str | None = None,
                 use_ema: bool = False, input_size: tuple[int, int] | None = None) -> None:
        import torch

        from repvgg_model.checkpoint import load_checkpoint

        if threads is not None:
            torch.set_num_threads(threads)
        loaded = load_checkpoint(model_path, arch=arch, use_ema=use_ema)
        self.loaded = loaded
        self.torch_device = torch.device(f"cuda:{device}" if torch.cuda.is_available() else "cpu")
        if self.torch_device.type == "cuda":
            if device >= torch.cuda.device_count():
                raise fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
            torch.backends.cudnn.allow_tf32 = False  # a float32 reference must not round inputs to TF32
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = loaded.model.float().eval().to(self.torch_device)
        self.compute_on_host = self.torch_device.type == "cpu"
        form = "fused (as stored)" if loaded.fused else "train-time"
        self.device = f"{self.torch_device} ({loaded.arch}, {form}, float32)"
        height, width = input_size or (loaded.variant.input_size, loaded.variant.input_size)
        # batch None: any batch size; height/width fixed so a folder of tensors needs no --input-size
        self.input = InputSpec("input", None, FLOAT32_CHW, 3, height, width)
        self.output_names = [OUTPUT_NAME]

    def run(self, batch: np.ndarray) -> tuple[list[np.ndarray], BatchTiming]:
        """One forward pass; on CUDA the copies are timed apart from the synchronised compute."""
        import torch

        cuda = self.torch_device.type == "cuda"
        try:
            with torch.inference_mode():
                start = time.perf_counter()
                tensor = torch.from_numpy(batch).to(self.torch_device)
                if cuda:
                    torch.cuda.synchronize(self.torch_device)
                h2d_ms = (time.perf_counter() - start) * 1000.0
                start = time.perf_counter()
                logits = self.model(tensor)
                if cuda:
                    torch.cuda.synchronize(self.torch_device)
                compute_ms = (time.perf_counter() - start) * 1000.0
                start = time.perf_counter()
                output = logits.float().cpu().numpy()
                d2h_ms = (time.perf_counter() - start) * 1000.0
        except RuntimeError as err:  # torch reports shape and memory problems as RuntimeError
            raise fail(f"PyTorch failed on a batch of shape {batch.shape}: {first_line(err)}", exit_code=1) from None
        if cuda:
            return [output], BatchTiming(compute_ms, [h2d_ms], [d2h_ms])
        return [output], BatchTiming(compute_ms)

    def close(self) -> None:
        """Drop the model (and its GPU memory)."""
        self.model = None
