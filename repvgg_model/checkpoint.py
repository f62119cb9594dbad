"""Reading RepVGG checkpoints of every common origin into this package's models.

A checkpoint goes through four steps, each a small function so that tests and error
messages can point at the one that failed:

1. `read_checkpoint_file`: `torch.load(weights_only=True)`; anything needing arbitrary
   unpickling is refused, never executed.
2. `unwrap_state_dict`: find the tensors under `state_dict` / `model` / `ema` wrappers and
   strip `module.` (DDP) or `_orig_mod.` (torch.compile) prefixes.
3. `detect_layout` + `to_official_keys`: official, timm and mmpretrain key names, train-time
   or fused, are renamed one-to-one to the official ones.
4. `infer_variant` from tensor shapes (or a forced `--arch`), then a strict load that lists
   missing / unexpected / mis-shaped keys.
"""

from __future__ import annotations

import argparse
import io
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from repvgg_model import mindspore
from repvgg_model.errors import CheckpointError, condense
from repvgg_model.model import create_model
from repvgg_model.variants import SE_AFTER_RELU, SE_BEFORE_RELU, VARIANTS, Variant, get_variant

OFFICIAL, TIMM, MMPRETRAIN = "official", "timm", "mmpretrain"
FAMILIES = (OFFICIAL, TIMM, MMPRETRAIN)
MAX_LISTED_KEYS = 10

# Plain-data classes that training scripts commonly store beside the weights (timm's train.py
# saves its argparse Namespace, many scripts a numpy best-accuracy scalar). Unpickling them
# only rebuilds data, so they are allowed on top of torch's weights-only set.
_DATA_ONLY_GLOBALS = [argparse.Namespace, np.dtype, np._core.multiarray.scalar] + [
    getattr(np.dtypes, name) for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
]

EMA_KEYS = ("ema", "model_ema", "state_dict_ema", "ema_state_dict")
MODEL_KEYS = ("state_dict", "model", "net", "module", "params")
PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into a model, with what was found on the way (for the user's report)."""

    model: nn.Module  # eval mode; train-time or fused, as the checkpoint holds it
    variant: Variant
    family: str  # official | timm | mmpretrain
    fused: bool
    num_classes: int
    wrapper: str  # e.g. "plain state_dict", "'state_dict'", "'model_ema' (EMA)"
    prefixes: list[str] = field(default_factory=list)  # stripped key prefixes, e.g. ["module."]
    path: Path | None = None

    @property
    def arch(self) -> str:
        return self.variant.name

    @property
    def layout(self) -> str:
        """'official-train', 'official-fused', 'timm-train', 'mmpretrain-fused', ..."""
        return f"{self.family}-{'fused' if self.fused else 'train'}"


def _capped(keys: list[str]) -> str:
    """At most MAX_LISTED_KEYS names plus a count, so an error stays one readable line."""
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    return shown + (f" (+{len(keys) - MAX_LISTED_KEYS} more)" if len(keys) > MAX_LISTED_KEYS else "")


def read_checkpoint_file(path: Path | str) -> object:
    """`torch.load` with `weights_only=True`; bad files become one-line `CheckpointError`s."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about what it refuses; the error below says it once
        return _load_weights_only(path)


def _load_weights_only(path: Path) -> object:
    try:
        with torch.serialization.safe_globals(_DATA_ONLY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling, zip, EOF, key and runtime errors all mean: not loaded
        raise CheckpointError(f"{path}: {_why_not_loaded(path, err)}") from None


def _why_not_loaded(path: Path, err: Exception) -> str:
    """What was refused and why, in our words.

    torch's own message for a refused file advises re-running with `weights_only=False`,
    i.e. switching the safety off; that advice is never passed on (issue 9, item 15).
    """
    unsafe = re.findall(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(err), flags=re.IGNORECASE)
    head = _head(path, 8)
    if not unsafe and head[:1] == b"\x80":  # a raw pickle (not torch.save's zip): read its imports without running it
        unsafe = _pickle_globals(path)
        if not unsafe:
            return ("refused: a plain Python pickle, not a torch.save checkpoint; only torch.save files are read, "
                    "weights only. Re-save just the weights: torch.save(model.state_dict(), ...)")
    if unsafe:
        names = _capped(sorted(set(unsafe)))
        return (f"refused: the checkpoint needs arbitrary unpickling of Python objects ({names}); "
                "it is never executed, checkpoints are read weights only. "
                "Re-save just the weights: torch.save(model.state_dict(), ...)")
    if head[:2] == b"PK" or zipfile.is_zipfile(path):
        return f"not a readable PyTorch checkpoint, truncated or corrupt? (zip archive: {_torch_reason(err)})"
    if isinstance(err, pickle.UnpicklingError):
        return (f"not a readable PyTorch checkpoint: neither a torch.save zip archive nor a pickle "
                f"(first bytes {head.hex(' ')})")
    return f"not a readable PyTorch checkpoint, truncated or corrupt? ({_torch_reason(err)})"


def _head(path: Path, count: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(count)
    except OSError:
        return b""


def _torch_reason(err: Exception) -> str:
    """torch's reason without its advice to disable `weights_only` (and without its boilerplate lines)."""
    lines = [line.strip() for line in str(err).splitlines()]
    kept = [line for line in lines if line and "weights_only" not in line and "file an issue" not in line.lower()
            and not line.startswith("Check the documentation")]
    return condense(Exception(kept[0])) if kept else type(err).__name__


_MAX_PICKLE_SCAN = 64 * 1024 * 1024


def _pickle_globals(path: Path) -> list[str]:
    """The `module.name`s a raw pickle would import, read with `pickletools` (which never executes anything)."""
    found: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            for opcode, arg, _pos in pickletools.genops(io.BytesIO(f.read(_MAX_PICKLE_SCAN))):
                if opcode.name == "GLOBAL" or opcode.name == "INST":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was found before the damage
        pass
    return found


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def unwrap_state_dict(obj: object, use_ema: bool = False) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The tensors of a checkpoint and where they were found: (state_dict, wrapper description, prefixes).

    EMA weights are taken only when `use_ema` asks for them (or when they are all there is);
    asking for EMA weights that are absent is an error rather than a silent fallback.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"the checkpoint holds a {type(obj).__name__}, not a dict of tensors")
    wrapper, took_ema = "plain state_dict", False
    for _ in range(3):  # wrappers nest at most a couple of levels (e.g. {"model_ema": {"module": ...}})
        if _is_state_dict(obj):
            break
        ema_key = next((k for k in EMA_KEYS if _is_mapping_at(obj, k)), None)
        model_key = next((k for k in MODEL_KEYS if _is_mapping_at(obj, k)), None)
        key = ema_key if ema_key and (use_ema or model_key is None) else model_key
        if key is None:
            break
        took_ema = took_ema or key == ema_key
        wrapper = f"'{key}'" + (" (EMA)" if key == ema_key else "")
        obj = obj[key]
    if use_ema and not took_ema:
        raise CheckpointError("--use-ema: the checkpoint holds no EMA weights (looked for " + ", ".join(EMA_KEYS) + ")")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"no state_dict found in the checkpoint (top-level keys: {_capped(list(map(str, obj)))})")
    state_dict, prefixes = _strip_prefixes(tensors)
    return state_dict, wrapper, prefixes


def _is_mapping_at(obj: Mapping, key: str) -> bool:
    return isinstance(obj.get(key), Mapping) and bool(obj.get(key))


def _strip_prefixes(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove `module.` / `_orig_mod.` / `model.` while every key carries it."""
    stripped = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors = {k[len(prefix):]: v for k, v in tensors.items()}
                stripped.append(prefix)
                changed = True
    return tensors, stripped


# --- key layouts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ForeignNames:
    """How timm or mmpretrain names what the official code calls `stage0.`, `stage{k}.`, `linear.` and the branches.

    One table serves both directions (reading foreign checkpoints, writing them for tests), so
    the two can never disagree.
    """

    stem: str  # the official `stage0.`
    stage: str  # the official `stage{k}.`, with `{}` the foreign stage number = k + stage_offset
    stage_offset: int
    head: str  # the official `linear.`
    # (official, foreign) fragments inside a key; where one contains another, the longer comes first
    fragments: tuple[tuple[str, str], ...]


_NAMES: dict[str, _ForeignNames] = {
    TIMM: _ForeignNames(
        stem="stem.", stage="stages.{}.", stage_offset=-1, head="head.fc.",
        fragments=((".rbr_dense.", ".conv_kxk."), (".rbr_1x1.", ".conv_1x1."), (".rbr_identity.", ".identity."),
                   (".se.down.", ".attn.fc1."), (".se.up.", ".attn.fc2."), (".rbr_reparam.", ".reparam_conv."))),
    MMPRETRAIN: _ForeignNames(
        stem="backbone.stem.", stage="backbone.stage_{}.", stage_offset=0, head="head.fc.",
        fragments=((".rbr_dense.bn.", ".branch_3x3.norm."), (".rbr_dense.", ".branch_3x3."),
                   (".rbr_1x1.bn.", ".branch_1x1.norm."), (".rbr_1x1.", ".branch_1x1."),
                   (".rbr_identity.", ".branch_norm."), (".rbr_reparam.", ".branch_reparam."),
                   (".se.down.", ".se_layer.conv1.conv."), (".se.up.", ".se_layer.conv2.conv."))),
}
_OFFICIAL_STAGE = re.compile(r"stage(\d+)\.")
_IGNORED_KEYS = re.compile(r"^data_preprocessor\.")  # mmpretrain's normalisation buffers, not weights


def _rename(key: str, names: _ForeignNames, to_official: bool) -> str:
    """One key from the foreign family to the official names (`to_official`) or back."""
    foreign_stage = re.compile(re.escape(names.stage).replace(r"\{\}", r"(\d+)"))
    if to_official:
        if key.startswith(names.stem):
            key = "stage0." + key[len(names.stem):]
        elif match := foreign_stage.match(key):
            key = f"stage{int(match.group(1)) - names.stage_offset}." + key[match.end():]
        elif key.startswith(names.head):
            key = "linear." + key[len(names.head):]
    elif key.startswith("stage0."):
        key = names.stem + key[len("stage0."):]
    elif match := _OFFICIAL_STAGE.match(key):
        key = names.stage.format(int(match.group(1)) + names.stage_offset) + key[match.end():]
    elif key.startswith("linear."):
        key = names.head + key[len("linear."):]
    for official, foreign in names.fragments:
        key = key.replace(*((foreign, official) if to_official else (official, foreign)))
    return key


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, bool]:
    """(family, fused) from the key names alone."""
    keys = list(state_dict)
    if any(k.startswith("backbone.") for k in keys):
        family = MMPRETRAIN
    elif any(k.startswith(("stem.", "stages.")) for k in keys):
        family = TIMM
    elif any(k.startswith("stage0.") for k in keys):
        family = OFFICIAL
    else:
        raise CheckpointError("unknown key layout: not official RepVGG, timm or mmpretrain "
                              f"(first keys: {_capped(keys)})")
    fused = any(re.search(r"(rbr_reparam|reparam_conv|branch_reparam)\.", k) for k in keys)
    return family, fused


def to_official_keys(state_dict: Mapping[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Rename timm / mmpretrain keys to the official ones (identity for the official family)."""
    if family == OFFICIAL:
        return dict(state_dict)
    return {_rename(k, _NAMES[family], True): v for k, v in state_dict.items() if not _IGNORED_KEYS.match(k)}


def from_official_keys(state_dict: Mapping[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The inverse renaming: official keys to timm or mmpretrain ones (used to write test checkpoints)."""
    if family == OFFICIAL:
        return dict(state_dict)
    if family not in _NAMES:
        raise CheckpointError(f"unknown layout {family!r}; known: {', '.join(FAMILIES)}")
    return {_rename(k, _NAMES[family], False): v for k, v in state_dict.items()}


# --- variant inference --------------------------------------------------------------------------
def _block_weight(state_dict: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor | None:
    return state_dict.get(prefix + "rbr_dense.conv.weight", state_dict.get(prefix + "rbr_reparam.weight"))


def _block_count(state_dict: Mapping[str, torch.Tensor], stage_prefix: str) -> int:
    pattern = re.compile(re.escape(stage_prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def describe_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object] | None:
    """Depths, widths, groups and SE kind read off official-key tensors (None if unreadable)."""
    plus = any(k.startswith("stage3_first.") for k in state_dict)
    if plus:
        prefixes = ["stage1.blocks.", "stage2.blocks.", "stage3_first.blocks.", "stage4.blocks."]
        depths = [_block_count(state_dict, p) for p in prefixes]
        depths[2] += _block_count(state_dict, "stage3_second.blocks.")
    else:
        prefixes = [f"stage{k}." for k in range(1, 5)]
        depths = [_block_count(state_dict, p) for p in prefixes]
    stem = _block_weight(state_dict, "stage0.")
    firsts = [_block_weight(state_dict, p + "0.") for p in prefixes]
    if stem is None or any(w is None for w in firsts) or stem.ndim != 4:
        return None
    widths = [int(w.shape[0]) for w in firsts]  # type: ignore[union-attr]
    second = _block_weight(state_dict, prefixes[0] + "1.")  # layer 2, grouped in g2/g4 variants
    in_per_group = int(second.shape[1]) if second is not None and second.ndim == 4 else 0
    groups = widths[0] // in_per_group if in_per_group else (1 if second is None or second.ndim != 4 else 0)
    se = SE_BEFORE_RELU if "stage0.se.down.weight" in state_dict else (
        SE_AFTER_RELU if "stage0.post_se.down.weight" in state_dict else None)
    return {"plus": plus, "depths": tuple(depths), "stem": int(stem.shape[0]), "widths": tuple(widths),
            "groups": groups, "se": se}


def infer_variant(state_dict: Mapping[str, torch.Tensor]) -> Variant:
    """The official variant whose architecture has exactly these tensor shapes."""
    shapes = describe_shapes(state_dict)
    if shapes is None:
        raise CheckpointError("cannot tell the RepVGG variant from the tensors (stage weights missing); pass --arch")
    for variant in VARIANTS.values():
        if (variant.plus, variant.num_blocks, variant.stem_channels, variant.stage_channels, variant.groups,
                variant.se) == (shapes["plus"], shapes["depths"], shapes["stem"], shapes["widths"], shapes["groups"],
                                shapes["se"]):
            return variant
    raise CheckpointError(f"the tensor shapes match no official RepVGG variant (stage depths {list(shapes['depths'])}, "
               f"widths {list(shapes['widths'])}, groups {shapes['groups']}, SE {shapes['se']}); pass --arch")


def num_classes_of(state_dict: Mapping[str, torch.Tensor]) -> int:
    weight = state_dict.get("linear.weight")
    if weight is None or weight.ndim != 2:
        raise CheckpointError("the checkpoint has no classifier weight (linear / head.fc)")
    if weight.shape[0] < 1 or weight.shape[1] < 1:
        raise CheckpointError(f"the classifier weight has shape {list(weight.shape)}: "
                              f"{int(weight.shape[0])} classes, a classifier needs at least one")
    return int(weight.shape[0])


def check_weights(state_dict: Mapping[str, torch.Tensor]) -> None:
    """Refuse damaged weights before they reach a model: NaN / inf values, negative BatchNorm variances.

    Either would make every output NaN, and a NaN model "agrees" with its NaN export on
    nothing that means anything; the tensors are named in the checkpoint's own key names.
    """
    complex_ = [k for k, v in state_dict.items() if v.is_complex()]
    if complex_:
        raise CheckpointError(f"complex-valued tensors, not weights: {_capped(complex_)}")
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"non-finite weights (NaN or inf) in {len(bad)} tensor{'s' if len(bad) > 1 else ''}: "
                              f"{_capped(bad)}; the checkpoint is damaged (a diverged training run?)")
    negative = [k for k, v in state_dict.items() if k.endswith("running_var") and bool((v < 0).any())]
    if negative:
        raise CheckpointError(f"negative BatchNorm running_var in {len(negative)} tensor"
                              f"{'s' if len(negative) > 1 else ''}: {_capped(negative)}; "
                              "a variance cannot be negative, the checkpoint is damaged")


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """`load_state_dict(strict=True)` with a one-line error listing the offending keys.

    BatchNorm `num_batches_tracked` counters may be absent (some EMA and export scripts drop
    them); they do not affect inference and keep the model's value.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_capped(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_capped(unexpected)}")
        raise CheckpointError(f"the checkpoint does not fit {what}: " + "; ".join(parts))
    mismatched = [f"{k} {list(v.shape)} vs {list(expected[k].shape)}" for k, v in state_dict.items()
                  if tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        raise CheckpointError(f"the checkpoint does not fit {what}: {len(mismatched)} tensors of another shape "
                   f"(checkpoint vs model): {_capped(mismatched)}")
    full = {**expected, **{k: v for k, v in state_dict.items()}}
    try:
        model.load_state_dict(full, strict=True)
    except (RuntimeError, TypeError, ValueError) as err:  # e.g. a tensor type that cannot be copied into a weight
        raise CheckpointError(f"the checkpoint does not fit {what}: {condense(err)}") from None


def load_checkpoint(path: Path | str, arch: str | None = None, use_ema: bool = False) -> LoadedCheckpoint:
    """Read any supported RepVGG checkpoint into a model (eval mode, train-time or fused as stored)."""
    if mindspore.sniff_file(path) is not None:  # recognised by content, not by the file name
        return _load_mindspore_checkpoint(Path(path), arch, use_ema)
    raw = read_checkpoint_file(path)
    loaded = load_state_dict_object(raw, arch=arch, use_ema=use_ema)
    loaded.path = Path(path)
    return loaded


def _load_mindspore_checkpoint(path: Path, arch: str | None, use_ema: bool) -> LoadedCheckpoint:
    """A MindSpore model zoo checkpoint (.ckpt / safetensors) renamed to the official layout, then loaded as usual;
    a safetensors file of another origin goes through the usual official / timm / mmpretrain key handling."""
    try:
        entries, container = mindspore.read_entries(path)
        if container.startswith("safetensors"):  # another framework's safetensors (e.g. timm's): its own key names
            tensors = {k: torch.from_numpy(np.array(v)) for k, v in entries.items() if not isinstance(v, str)}
            loaded = load_state_dict_object(tensors, arch=arch, use_ema=use_ema)
            loaded.wrapper = f"{container}, {loaded.wrapper}"
            loaded.path = path
            return loaded
        checkpoint = mindspore.to_official(entries, use_ema=use_ema, container=container)
    except mindspore.MindSporeFormatError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    state_dict = {k: torch.from_numpy(np.array(v)) for k, v in checkpoint.state_dict.items()}
    loaded = load_state_dict_object(state_dict, arch=arch)
    loaded.wrapper = checkpoint.summary()
    loaded.prefixes = [checkpoint.prefix] if checkpoint.prefix else []
    loaded.path = path
    return loaded


def load_state_dict_object(raw: object, arch: str | None = None, use_ema: bool = False) -> LoadedCheckpoint:
    """`load_checkpoint` for an object already in memory (what `torch.load` returned)."""
    tensors, wrapper, prefixes = unwrap_state_dict(raw, use_ema)
    check_weights(tensors)
    family, fused = detect_layout(tensors)
    state_dict = to_official_keys(tensors, family)
    variant = get_variant(arch) if arch else infer_variant(state_dict)
    num_classes = num_classes_of(state_dict)
    model = create_model(variant, num_classes=num_classes, deploy=fused)
    form = "fused" if fused else "train-time"
    load_strict(model, state_dict, f"{variant.name} ({form}, {family} keys)")
    return LoadedCheckpoint(model.eval(), variant, family, fused, num_classes, wrapper, prefixes)
