"""MindSpore checkpoints of the model zoo's RepVGG (`research/cv/repvgg`), read without MindSpore.

Two containers, recognised by their first bytes (never by the file name):

- `.ckpt`: protobuf `Checkpoint` messages, concatenated (facts from MindSpore's
  `mindspore/ccsrc/utils/checkpoint.proto` and `mindspore/train/serialization.py`):

      message Checkpoint  { repeated Value value = 1; }
      message Value       { string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
      message TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }

  Tensors above 512 MiB are split into consecutive `Value`s with the same tag (the contents are
  joined, the last chunk's dims apply); `dims == [0]` or no dims is a scalar; `tensor_type` `str`
  holds a numpy unicode string (UTF-32LE) written by `append_dict`; `save_checkpoint(crc_check=True)`
  appends `b"crc_num"` and the big-endian CRC-32 of everything before it in 10 bytes; the tag
  `random_op` is MindSpore's RNG state. Files saved with `enc_key` are blocks that each start with the
  magic number of MindSpore's crypto module as a native (little-endian) int32 (0x7F3A5ED8 AES-GCM,
  ...D9 AES-CBC, ...DA SM4-CBC; `ccsrc/utils/crypto.h`, `ByteToInt` in `crypto.cc`) and are refused.
  The wire format is decoded by the small reader below (varints and length-delimited fields only);
  nothing of protobuf's generated code is needed.
- `.safetensors` with `{"format": "ms"}` metadata (`save_checkpoint(format="safetensors")`),
  read with the `safetensors` library.

Key names of the model zoo's network (`src/models/repvgg.py`) are mapped to the official PyTorch
ones that `repvgg_model.checkpoint` loads:

- `conv_bn` is `SequentialCell([conv, BatchNorm2d])`: `rbr_dense.0.weight` -> `rbr_dense.conv.weight`,
  `rbr_dense.1.gamma/beta/moving_mean/moving_variance` -> `rbr_dense.bn.weight/bias/running_mean/running_var`;
- the Ascend branch builds the conv as `GroupConv2d`, a `CellList` of one conv per group whose outputs
  are concatenated along channels: `rbr_dense.0.convs.{i}.weight` (out/g, in/g, k, k) concatenated
  along dim 0 is PyTorch's grouped weight (out, in/g, k, k);
- `rbr_identity` is a bare BatchNorm2d, `se.down/up` and `linear` (Dense) have PyTorch's shapes.

Training checkpoints (`train.py`'s `ModelCheckpoint` on `TrainOneStepWithEMA(NetWithLoss(...))`)
hold the network under `model.`, plus optimizer state (`moments.*`, `learning_rate`, `momentum`,
`global_step`), loss-scale state (`scale_sense`, `current_iterator_step`,
`last_overflow_iterator_step`), `append_dict` entries (`epoch_num`, `step_num`, ...) and, with EMA,
`_ema_weights.model.*` (`ParameterTuple.clone(prefix="_ema_weights")` of the *trainable* weights
only: BatchNorm moving statistics always come from the network itself). Entries that are not
network weights are ignored and counted in `MindSporeCheckpoint.summary()`.
"""

from __future__ import annotations

import binascii
import json
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CKPT, SAFETENSORS = "MindSpore .ckpt", "MindSpore safetensors"
CRC_MARK = b"crc_num"
CRC_TRAILER = len(CRC_MARK) + 10  # the mark plus a 10-byte big-endian CRC-32
CIPHER_MAGICS = {0x7F3A5ED8: "AES-GCM", 0x7F3A5ED9: "AES-CBC", 0x7F3A5EDA: "SM4-CBC"}
EMA_PREFIX = "_ema_weights."
# what the optimizer / EMA cell keep beside the network: never network weights themselves
STATE_PREFIXES = ("moments.", EMA_PREFIX, "accu_grads.", "adam_m.", "adam_v.", "accum.", "mean_grad.", "mean_square.")

_NUMPY_TYPES = {
    "Bool": np.bool_, "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16,
    "Int32": np.int32, "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64,
    "Float16": np.float16, "Float32": np.float32, "Float64": np.float64,
}
_TYPE_NAMES = {np.dtype(t): name for name, t in _NUMPY_TYPES.items()}
BFLOAT16 = "BFloat16"  # numpy has no bfloat16: widened to float32 exactly (its upper 16 bits)


class MindSporeFormatError(ValueError):
    """A MindSpore file that cannot be used; the message is one line without the path."""


# --- container detection --------------------------------------------------------------------------
def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Protobuf base-128 varint at `pos`: (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise MindSporeFormatError("truncated: the file ends inside a field")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MindSporeFormatError("corrupt: a varint longer than 10 bytes")


def detect_format(head: bytes) -> str | None:
    """CKPT, SAFETENSORS, "encrypted" or None, from the first bytes of a file (64 are plenty).

    A `.ckpt` starts with Checkpoint field 1 (`0x0a`), a length, then Value field 1 (`0x0a`, the tag);
    a safetensors file with an 8-byte little-endian header length and `{`; torch files with `PK`
    (zip) or `0x80` (pickle), so the three never collide.
    """
    if len(head) >= 4:
        for order in ("big", "little"):
            if int.from_bytes(head[:4], order) in CIPHER_MAGICS:
                return "encrypted"
    if len(head) >= 3 and head[0] == 0x0A:
        try:
            _, pos = _varint(head, 1)
        except MindSporeFormatError:
            return None
        if pos < len(head) and head[pos] == 0x0A:
            return CKPT
    if len(head) >= 9 and head[8:9] == b"{":
        size = int.from_bytes(head[:8], "little")
        if 2 <= size < 100_000_000:
            return SAFETENSORS
    return None


def sniff_file(path: Path | str) -> str | None:
    """`detect_format` of a regular file's first bytes; None for anything else (left to the torch reader)."""
    path = Path(path)
    try:
        if not path.is_file():
            return None
        with path.open("rb") as f:
            return detect_format(f.read(64))
    except OSError:
        return None


# --- .ckpt wire format ----------------------------------------------------------------------------
def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; varints as int, length-delimited as a view."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise MindSporeFormatError("corrupt: field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise MindSporeFormatError("truncated: a field runs past the end of the file")
            yield number, wire, buf[pos:pos + size]
            pos += size
        elif wire in (1, 5):  # fixed 64 / 32 bit: not in the schema, skipped like protobuf does
            pos += 8 if wire == 1 else 4
            if pos > end:
                raise MindSporeFormatError("truncated: a field runs past the end of the file")
        else:
            raise MindSporeFormatError(f"corrupt: wire type {wire} is not protobuf's")


@dataclass
class _Tensor:
    dims: list[int] = field(default_factory=list)
    tensor_type: str = ""
    content: bytes = b""


def _tensor_proto(buf: memoryview) -> _Tensor:
    tensor = _Tensor()
    parts = []
    for number, wire, value in _fields(buf, 0, len(buf)):
        if number == 1 and wire == 0:
            tensor.dims.append(int(value))
        elif number == 1 and wire == 2:  # packed repeated int64
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                tensor.dims.append(dim)
        elif number == 2 and wire == 2:
            tensor.tensor_type = bytes(value).decode("utf-8", "replace")
        elif number == 3 and wire == 2:
            parts.append(bytes(value))
    tensor.content = b"".join(parts)
    return tensor


def _values(content: memoryview) -> Iterator[tuple[str, str, _Tensor | None]]:
    """(tag, "tensor" | "maptensor" | "empty", tensor) for every Value of every Checkpoint message."""
    for number, wire, value in _fields(content, 0, len(content)):
        if number != 1 or wire != 2:
            raise MindSporeFormatError(f"corrupt: Checkpoint field {number} (wire type {wire}) is not a Value")
        tag, kind, tensor = "", "empty", None
        for vnum, vwire, vval in _fields(value, 0, len(value)):
            if vnum == 1 and vwire == 2:
                tag = bytes(vval).decode("utf-8", "replace")
            elif vnum == 2 and vwire == 2:
                kind, tensor = "tensor", _tensor_proto(vval)
            elif vnum == 3 and vwire == 2:
                kind, tensor = "maptensor", None
        yield tag, kind, tensor


def _to_array(tag: str, tensor: _Tensor, content: bytes) -> np.ndarray | str:
    """One (joined) tensor as MindSpore's `load_checkpoint` returns it: an array, or a str for `str` entries."""
    dtype_name = tensor.tensor_type
    if dtype_name == "str":
        if len(content) % 4:
            raise MindSporeFormatError(f"corrupt: string entry {tag!r} is not UTF-32")
        return content.decode("utf-32-le").rstrip("\x00")
    if dtype_name == BFLOAT16:
        if len(content) % 2:
            raise MindSporeFormatError(f"corrupt: {tag!r} has an odd number of bfloat16 bytes")
        flat = (np.frombuffer(content, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype_name in _NUMPY_TYPES:
        dtype = np.dtype(_NUMPY_TYPES[dtype_name]).newbyteorder("<")
        if len(content) % dtype.itemsize:
            raise MindSporeFormatError(f"truncated or corrupt: {tag!r} holds {len(content)} bytes, "
                                       f"not a whole number of {dtype_name}")
        flat = np.frombuffer(content, dtype).astype(dtype.newbyteorder("="), copy=False)
    else:
        raise MindSporeFormatError(f"entry {tag!r} has tensor type {dtype_name!r}, which this reader does not know")
    dims = list(tensor.dims)
    if dims in ([], [0]):  # a scalar (MindSpore writes dims [0] for str / Python scalars, none for 0-d tensors)
        if flat.size != 1:
            raise MindSporeFormatError(f"corrupt: scalar {tag!r} holds {flat.size} values")
        return flat.reshape(())
    if int(np.prod(dims)) != flat.size:
        raise MindSporeFormatError(f"truncated or corrupt: {tag!r} has shape {dims} but {flat.size} values")
    return flat.reshape(dims)


def parse_ckpt(data: bytes) -> dict[str, np.ndarray | str]:
    """All entries of a `.ckpt` file's bytes, in file order; verifies a CRC trailer when present."""
    if detect_format(data[:64]) == "encrypted":
        mode = CIPHER_MAGICS.get(int.from_bytes(data[:4], "little")) or CIPHER_MAGICS.get(
            int.from_bytes(data[:4], "big"), "?")
        raise MindSporeFormatError(f"refused: the checkpoint is encrypted ({mode}, saved with enc_key); "
                                   "decrypt it with MindSpore's load_checkpoint(dec_key=...) and save it "
                                   "without enc_key")
    content = memoryview(data)
    if bytes(data[-CRC_TRAILER:-10]) == CRC_MARK:
        content = content[:-CRC_TRAILER]
        stored = int.from_bytes(data[-10:], "big")
        actual = binascii.crc32(content)
        if stored != actual:
            raise MindSporeFormatError(f"CRC check failed (stored {stored:#010x}, computed {actual:#010x}): "
                                       "the file is damaged")
    entries: dict[str, np.ndarray | str] = {}
    chunks: list[bytes] = []
    pending: tuple[str, _Tensor] | None = None
    for tag, kind, tensor in _values(content):
        if kind == "maptensor":
            raise MindSporeFormatError(f"refused: entry {tag!r} is a MapTensor (embedding hash table), "
                                       "which a RepVGG network never has")
        if kind == "empty" or tensor is None:
            raise MindSporeFormatError(f"corrupt: entry {tag!r} holds no tensor")
        if pending is not None and pending[0] != tag:
            entries[pending[0]] = _to_array(pending[0], pending[1], b"".join(chunks))
            chunks = []
        pending = (tag, tensor)
        chunks.append(tensor.content)  # a tensor split into chunks repeats its tag
    if pending is not None:
        entries[pending[0]] = _to_array(pending[0], pending[1], b"".join(chunks))
    if not entries:
        raise MindSporeFormatError("the checkpoint holds no entries")
    entries.pop("random_op", None)  # MindSpore's RNG state, skipped by its own loader too
    return entries


def read_entries(path: Path | str) -> tuple[dict[str, np.ndarray | str], str]:
    """(entries, container) of a MindSpore `.ckpt` or a safetensors file; `MindSporeFormatError` otherwise.

    The container is CKPT, SAFETENSORS (MindSpore's, `{"format": "ms"}`) or, for a safetensors file
    another framework wrote (timm's, `safetensors.torch.save_file`), "safetensors (format ...)".
    """
    path = Path(path)
    with path.open("rb") as f:
        kind = detect_format(f.read(64))
        if kind == SAFETENSORS:
            entries = _read_safetensors(path)
            fmt = safetensors_metadata(path).get("format")
            return entries, SAFETENSORS if fmt == "ms" else f"safetensors (format {fmt or 'not stated'})"
        if kind in (CKPT, "encrypted"):
            f.seek(0)
            return parse_ckpt(f.read()), CKPT
    raise MindSporeFormatError("not a MindSpore .ckpt or safetensors file")


def _read_safetensors(path: Path) -> dict[str, np.ndarray | str]:
    """All tensors as numpy arrays (through torch, so that bfloat16 works too: widened to float32 exactly)."""
    try:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise MindSporeFormatError("reading safetensors needs the safetensors package: "
                                   "pip install -r requirements.txt") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError, RuntimeError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MindSporeFormatError(f"not a readable safetensors file, truncated or corrupt? ({text[:200]})") from None
    return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in tensors.items()}


def safetensors_metadata(path: Path | str) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (MindSpore writes `{"format": "ms"}`)."""
    with Path(path).open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


# --- writer (tests and conversions: the same wire format the reader decodes) ------------------------
def _key(number: int, wire: int) -> bytes:
    return _encode_varint(number << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _value_message(tag: str, dims: list[int], type_name: str, content: bytes) -> bytes:
    tensor = b"".join(_key(1, 0) + _encode_varint(d) for d in dims)
    tensor += _length_delimited(2, type_name.encode()) + _length_delimited(3, content)
    value = _length_delimited(1, tag.encode()) + _length_delimited(2, tensor)
    return _length_delimited(1, value)  # one Checkpoint message per Value, as save_checkpoint writes them


def encode_ckpt(entries: Mapping[str, np.ndarray | str], crc_check: bool = False,
                chunk_bytes: int | None = None) -> bytes:
    """Bytes of a `.ckpt` holding `entries` (arrays or strings) the way MindSpore's `save_checkpoint` lays them out.

    `chunk_bytes` splits larger tensors into chunks with the same tag (MindSpore does it above 512 MiB).
    """
    out = bytearray()
    for tag, value in entries.items():
        if isinstance(value, str):
            out += _value_message(tag, [0], "str", value.encode("utf-32-le"))
            continue
        array = np.asarray(value)  # not ascontiguousarray: it turns a 0-d scalar into shape (1,)
        type_name = _TYPE_NAMES.get(array.dtype)
        if type_name is None:
            raise MindSporeFormatError(f"cannot write {tag!r}: dtype {array.dtype}")
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        dims = list(array.shape)
        step = chunk_bytes or len(raw) or 1
        pieces = [raw[i:i + step] for i in range(0, len(raw), step)] or [b""]
        for piece in pieces:
            out += _value_message(tag, dims, type_name, piece)
    if crc_check:
        out += CRC_MARK + binascii.crc32(out).to_bytes(10, "big")
    return bytes(out)


# --- model zoo names -> official names ----------------------------------------------------------------
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_NETWORK_KEY = re.compile(r"^(stage\d+|linear)\.")
_STAGE0 = re.compile(r"^(.*?)stage0\.")
_CONVBN = re.compile(r"\.(rbr_dense|rbr_1x1)\.(0|1)\.")
_GROUP = re.compile(r"^(.*)\.convs\.(\d+)\.(weight|bias)$")


@dataclass
class MindSporeCheckpoint:
    """A MindSpore checkpoint read and renamed to the official key layout, with what was left out."""

    state_dict: dict[str, np.ndarray]  # official keys
    container: str  # CKPT or SAFETENSORS
    naming: str  # "GPU names" | "Ascend names (GroupConv2d)"
    prefix: str  # stripped network prefix, e.g. "model." of NetWithLoss
    ema: bool
    ignored: dict[str, int]  # category -> count of entries not used

    def summary(self) -> str:
        """One phrase for the report: container, naming, what was taken and what was ignored."""
        took = f"{len(self.state_dict)} network tensors" + (" (EMA weights)" if self.ema else "")
        text = f"{self.container}, model zoo {self.naming}, {took}"
        if self.ignored:
            total = sum(self.ignored.values())
            parts = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in self.ignored.items())
            text += f"; {total} non-model entries ignored: {parts}"
        return text


def _category(key: str) -> str:
    """How an ignored entry is reported: optimizer/EMA state by prefix, anything else by name."""
    for prefix in STATE_PREFIXES:
        if key.startswith(prefix):
            return prefix + "*"
    return key


def _network_prefix(keys: list[str]) -> str:
    """The prefix in front of the network's `stage0.` (``""``, ``"model."`` of NetWithLoss, ...)."""
    found = sorted({m.group(1) for k in keys if not k.startswith(STATE_PREFIXES) and (m := _STAGE0.match(k))},
                   key=len)
    if not found:
        raise MindSporeFormatError("no RepVGG network weights (no 'stage0.' key) in the checkpoint; "
                                   f"first keys: {', '.join(keys[:8])}")
    return found[0]


def _official_name(key: str) -> str:
    """One model zoo key (without prefix and GroupConv2d index) in the official layout."""
    match = _CONVBN.search(key)
    if match:
        branch, index = match.group(1), match.group(2)
        rest = key[match.end():]
        if index == "0":
            return f"{key[:match.start()]}.{branch}.conv.{rest}"
        return f"{key[:match.start()]}.{branch}.bn.{_BN_NAMES.get(rest, rest)}"
    head, _, last = key.rpartition(".")
    if head.endswith(".rbr_identity") and last in _BN_NAMES:
        return f"{head}.{_BN_NAMES[last]}"
    return key


def to_official(entries: Mapping[str, np.ndarray | str], use_ema: bool = False,
                container: str = CKPT) -> MindSporeCheckpoint:
    """Pick the network weights out of a MindSpore checkpoint and rename them to the official layout.

    With `use_ema` the EMA copies (`_ema_weights.<prefix>...`) replace the trainable weights; the
    BatchNorm moving statistics, which the EMA cell does not track, stay the network's.
    """
    keys = list(entries)
    prefix = _network_prefix(keys)
    ema_keys = [k for k in keys if k.startswith(EMA_PREFIX + prefix)]
    if use_ema and not ema_keys:
        raise MindSporeFormatError(f"--use-ema: the checkpoint holds no EMA weights (no '{EMA_PREFIX}{prefix}*' keys)")
    network: dict[str, np.ndarray] = {}
    ignored: Counter[str] = Counter()
    for key, value in entries.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is None or key.startswith(STATE_PREFIXES) or not _NETWORK_KEY.match(name) or isinstance(value, str):
            ignored[_category(key)] += 1
            continue
        network[name] = value
    if use_ema:
        for key in ema_keys:
            name = key[len(EMA_PREFIX + prefix):]
            if name in network and not isinstance(entries[key], str):
                network[name] = entries[key]  # type: ignore[assignment]
    grouped: dict[str, dict[int, np.ndarray]] = {}
    state_dict: dict[str, np.ndarray] = {}
    for name, value in network.items():
        group = _GROUP.match(name)
        if group:
            grouped.setdefault(f"{group.group(1)}.{group.group(3)}", {})[int(group.group(2))] = value
        else:
            state_dict[_official_name(name)] = value
    for name, parts in grouped.items():
        order = sorted(parts)
        if order != list(range(len(order))):
            raise MindSporeFormatError(f"GroupConv2d {name}: convs {order} are not 0..{len(order) - 1}")
        state_dict[_official_name(name)] = np.concatenate([parts[i] for i in order], axis=0)
    naming = "Ascend names (GroupConv2d)" if grouped else "GPU names"
    return MindSporeCheckpoint(state_dict, container, naming, prefix, use_ema, dict(ignored))


def load_mindspore(path: Path | str, use_ema: bool = False) -> MindSporeCheckpoint:
    """Read a MindSpore checkpoint file into official-layout arrays (see the module docstring)."""
    entries, container = read_entries(path)
    return to_official(entries, use_ema=use_ema, container=container)
