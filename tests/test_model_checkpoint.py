"""Checkpoint reading: every key layout and wrapper, variant inference, strict loading, refusing unsafe files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from repvgg_model import VARIANTS, create_model, fuse_model, load_checkpoint, write_random_checkpoint
from repvgg_model import official as official_module
from repvgg_model.checkpoint import from_official_keys, infer_variant, to_official_keys
from repvgg_model.errors import ModelError
from repvgg_model.synthetic import LAYOUTS, random_state_dict

NUM_CLASSES = 10


@pytest.fixture(scope="module")
def a0_official() -> dict[str, torch.Tensor]:
    return random_state_dict("RepVGG-A0", NUM_CLASSES, seed=1, calibration_size=64)


@pytest.fixture(scope="module")
def reference_logits(a0_official) -> tuple[torch.Tensor, torch.Tensor]:
    model = create_model("A0", NUM_CLASSES)
    model.load_state_dict(a0_official)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, model(x)


def save(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def assert_same_function(model: torch.nn.Module, reference_logits) -> None:
    x, expected = reference_logits
    with torch.no_grad():
        got = model(x)
    assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_to_the_same_network(tmp_path, layout, reference_logits):
    path = tmp_path / "ckpt.pth"
    state_dict = random_state_dict("RepVGG-A0", NUM_CLASSES, seed=1, layout=layout, calibration_size=64)
    save(path, {"state_dict": state_dict, "meta": {}} if layout.startswith("mmpretrain") else state_dict)
    loaded = load_checkpoint(path)
    family, _, form = layout.partition("-")
    assert loaded.layout == f"{family}-{form or 'train'}"
    assert loaded.arch == "RepVGG-A0" and loaded.num_classes == NUM_CLASSES
    assert loaded.fused == (form == "fused")
    assert not loaded.model.training
    assert_same_function(fuse_model(loaded.model)[0], reference_logits)


def test_foreign_key_names_are_the_published_ones(a0_official):
    timm_keys = set(from_official_keys(a0_official, "timm"))
    assert {"stem.conv_kxk.conv.weight", "stem.conv_1x1.bn.running_var", "stages.0.1.identity.weight",
            "stages.3.0.conv_kxk.bn.bias", "head.fc.weight"} <= timm_keys
    mm_keys = set(from_official_keys(a0_official, "mmpretrain"))
    assert {"backbone.stem.branch_3x3.conv.weight", "backbone.stem.branch_1x1.norm.running_mean",
            "backbone.stage_1.1.branch_norm.weight", "backbone.stage_3.13.branch_3x3.norm.bias",
            "head.fc.weight"} <= mm_keys
    with torch.device("meta"):
        fused = create_model("D2se", deploy=True).state_dict()
    assert "stages.0.0.attn.fc1.weight" in from_official_keys(fused, "timm")
    assert "backbone.stage_1.0.se_layer.conv2.conv.bias" in from_official_keys(fused, "mmpretrain")
    assert "stages.0.0.reparam_conv.weight" in from_official_keys(fused, "timm")
    for family in ("timm", "mmpretrain"):
        assert to_official_keys(from_official_keys(fused, family), family).keys() == fused.keys()


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module-prefix", "nested-ddp", "compiled", "extras"])
def test_wrappers_and_prefixes(tmp_path, wrap, a0_official, reference_logits):
    ddp = {f"module.{k}": v for k, v in a0_official.items()}
    payload = {
        "state_dict": {"state_dict": a0_official, "epoch": 3},
        "model": {"model": a0_official, "optimizer": {"lr": torch.tensor(0.1)}},
        "module-prefix": ddp,
        "nested-ddp": {"model": ddp, "best_acc1": np.float64(72.4), "args": argparse.Namespace(arch="RepVGG-A0")},
        "compiled": {f"_orig_mod.{k}": v for k, v in a0_official.items()},
        "extras": {"model": a0_official, "max_accuracy": 72.4, "epoch": 120},
    }[wrap]
    loaded = load_checkpoint(save(tmp_path / "c.pth", payload))
    assert loaded.layout == "official-train"
    assert_same_function(loaded.model, reference_logits)


def test_ema_weights_only_when_asked(tmp_path, a0_official, reference_logits):
    other = random_state_dict("RepVGG-A0", NUM_CLASSES, seed=2, calibration_size=64)
    path = save(tmp_path / "ema.pth", {"model": other, "model_ema": {f"module.{k}": v for k, v in a0_official.items()}})
    assert "EMA" not in load_checkpoint(path).wrapper
    loaded = load_checkpoint(path, use_ema=True)
    assert "EMA" in loaded.wrapper
    assert_same_function(loaded.model, reference_logits)
    with pytest.raises(ModelError, match="no EMA weights"):
        load_checkpoint(save(tmp_path / "noema.pth", {"model": other}), use_ema=True)


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_variant_inferred_from_shapes_in_every_layout(arch):
    with torch.device("meta"):
        train = create_model(arch, num_classes=21).state_dict()
        deploy = create_model(arch, num_classes=21, deploy=True).state_dict()
    assert infer_variant(train).name == arch
    assert infer_variant(deploy).name == arch
    if not VARIANTS[arch].plus:  # timm and mmpretrain have no RepVGGplus
        for family in ("timm", "mmpretrain"):
            assert infer_variant(to_official_keys(from_official_keys(train, family), family)).name == arch


def test_missing_batch_counters_are_tolerated(tmp_path, a0_official, reference_logits):
    trimmed = {k: v for k, v in a0_official.items() if not k.endswith("num_batches_tracked")}
    assert_same_function(load_checkpoint(save(tmp_path / "t.pth", trimmed)).model, reference_logits)


def test_half_precision_checkpoint_loads(tmp_path, a0_official):
    half = {k: v.half() if v.is_floating_point() else v for k, v in a0_official.items()}
    loaded = load_checkpoint(save(tmp_path / "h.pth", half))
    assert next(loaded.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such file"),
    ("empty", "empty file"),
    ("text", "not a readable PyTorch checkpoint"),
    ("truncated", "truncated or corrupt"),
    ("unsafe", "refused"),
    ("list", "not a dict of tensors"),
    ("unknown-layout", "unknown key layout"),
    ("wrong-arch", "does not fit RepVGG-A1"),
    ("missing-keys", "2 missing keys"),
    ("extra-keys", "unexpected keys"),
    ("not-a-variant", "match no official RepVGG variant"),
    ("no-tensors", "no state_dict found"),
])
def test_bad_checkpoints_raise_one_line_errors(tmp_path, case, message, a0_official):
    path = tmp_path / f"{case}.pth"
    arch = None
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("this is not a checkpoint\n")
    elif case == "truncated":
        save(path, a0_official)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "unsafe":
        save(path, {"model": a0_official, "thing": UnsafeThing()})
    elif case == "list":
        save(path, [torch.zeros(1)])
    elif case == "unknown-layout":
        save(path, {"features.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(2, 3)})
    elif case == "wrong-arch":
        save(path, a0_official)
        arch = "RepVGG-A1"
    elif case == "missing-keys":
        save(path, {k: v for k, v in a0_official.items() if not k.startswith("stage2.1.rbr_1x1.bn.running")})
    elif case == "extra-keys":
        save(path, {**a0_official, "stage9.0.foo": torch.zeros(1)})
    elif case == "not-a-variant":
        save(path, {k: v for k, v in a0_official.items() if not k.startswith("stage3.13.")})
    elif case == "no-tensors":
        save(path, {"epoch": 3, "config": {"lr": 0.1}})
    with pytest.raises(ModelError, match=message) as info:
        load_checkpoint(path, arch=arch)
    assert "\n" not in str(info.value)


class UnsafeThing:
    """Any class outside torch's weights-only allow list: loading it would run arbitrary code."""


def test_key_lists_are_capped(tmp_path, a0_official):
    path = save(tmp_path / "few.pth", {k: v for k, v in a0_official.items() if not k.startswith("stage3.")})
    with pytest.raises(ModelError) as info:
        load_checkpoint(path, arch="A0")
    text = str(info.value)
    assert "missing keys" in text and "more)" in text and text.count("stage3.") == 10


def test_official_release_recognised_by_sha256(tmp_path, monkeypatch):
    path = tmp_path / "RepVGG-A0-train.pth"
    path.write_bytes(b"pretend weights")
    digest = official_module.sha256_of(path)
    table = (official_module.OfficialCheckpoint("RepVGG-A0-train.pth", digest, path.stat().st_size, "RepVGG-A0",
                                                "72.41", "90.51"),)
    monkeypatch.setattr(official_module, "official_checkpoints", lambda: table)
    assert official_module.identify_official(path).top1 == "72.41"
    path.write_bytes(b"pretend weightz")  # same size, other content
    assert official_module.identify_official(path) is None


def test_shipped_table_is_the_shared_one():
    table = official_module.official_checkpoints()
    assert len(table) == 15 and {c.variant for c in table} <= set(VARIANTS)
    assert all(len(c.sha256) == 64 for c in table)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "official_checkpoints.tsv"
    if shared.is_file():
        ours = (Path(official_module.__file__).parent / "official_checkpoints.tsv").read_text()
        assert ours == shared.read_text()


def test_random_checkpoint_is_deterministic_with_real_bn_statistics(tmp_path):
    write_random_checkpoint(tmp_path / "a.pth", seed=7)
    write_random_checkpoint(tmp_path / "b.pth", seed=7)
    write_random_checkpoint(tmp_path / "c.pth", seed=8)
    a, b, c = (torch.load(tmp_path / n, weights_only=True) for n in ("a.pth", "b.pth", "c.pth"))
    assert a.keys() == b.keys() == set(create_model("A0").state_dict())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stage1.0.rbr_dense.conv.weight"], c["stage1.0.rbr_dense.conv.weight"])
    for key in ("stage2.1.rbr_dense.bn", "stage3.5.rbr_identity"):
        assert a[f"{key}.running_mean"].abs().mean() > 0.01
        assert (a[f"{key}.running_var"] - 1).abs().mean() > 0.05
        assert (a[f"{key}.weight"] - 1).abs().mean() > 0.05 and a[f"{key}.bias"].abs().mean() > 0.01
    assert load_checkpoint(tmp_path / "a.pth").layout == "official-train"


def test_random_checkpoint_spreads_real_images_over_classes(tmp_path, shared_data):
    from repvgg_pipeline.dataset import find_images
    from repvgg_pipeline.transforms import EvalTransform, preprocess_image

    write_random_checkpoint(tmp_path / "a0.pth", seed=0)
    model = load_checkpoint(tmp_path / "a0.pth").model
    items = find_images(shared_data / "imagenet_val_1300").items[:40]
    x = torch.from_numpy(np.stack([preprocess_image(i.path, EvalTransform()) for i in items]))
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).all() and logits.abs().max() < 1e3
    assert len(set(logits.argmax(1).tolist())) >= 8
