"""The RepVGG network: every official variant, its re-parameterisation, checkpoint loading and ONNX export.

Public API (what the step scripts and the other parts of the pipeline use):

- `create_model(arch, num_classes=1000, deploy=False)`: any official variant, train-time or deploy form;
- `fuse_model(model)`: the deploy form of a train-time model (and how many blocks were fused);
- `load_checkpoint(path, arch=None, use_ema=False)`: official / timm / mmpretrain checkpoints,
  train-time or fused, wrapped or not, into a model (`.model`, `.arch`, `.layout`, `.num_classes`);
- `write_random_checkpoint(path, arch="RepVGG-A0", ...)`: deterministic random weights with
  non-trivial BatchNorm statistics, for demos and tests;
- `VARIANTS`, `get_variant(name)`: the table of official architectures.
"""

from repvgg_model.checkpoint import LoadedCheckpoint, load_checkpoint
from repvgg_model.model import RepVGG, RepVGGBlock, RepVGGplus, create_model, fuse_model
from repvgg_model.synthetic import randomize_model, write_random_checkpoint
from repvgg_model.variants import VARIANTS, Variant, get_variant

__all__ = [
    "VARIANTS",
    "LoadedCheckpoint",
    "RepVGG",
    "RepVGGBlock",
    "RepVGGplus",
    "Variant",
    "create_model",
    "fuse_model",
    "get_variant",
    "load_checkpoint",
    "randomize_model",
    "write_random_checkpoint",
]
