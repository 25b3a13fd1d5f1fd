"""Reads PyTorch state dicts (`.pth`) into NumPy arrays, without needing torch.

A `.pth` file written by `torch.save(state_dict)` is a pickle whose tensors point
at raw storages by persistent id. Two layouts exist:

- zip (torch ≥ 1.6 default): `<archive>/data.pkl` plus one raw file
  `<archive>/data/<key>` per storage;
- legacy (older files such as pytorch-fid's `pt_inception-2015-12-05`): three
  small pickles (magic number, protocol, system info), the main pickle, a pickle
  with the list of storage keys, then per key an int64 element count followed by
  the raw little-endian bytes.

`read_torch_state_dict` rebuilds every tensor as a NumPy array with a restricted
unpickler that only knows ordered dicts, storages and tensor rebuild functions,
so a file cannot run code. Files it cannot parse are handed to `torch.load`
(`weights_only=True`) when torch is installed.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO

import numpy as np

from psr.errors import CheckpointError

# torch's legacy serialisation header (torch/serialization.py).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# Storage classes as they appear in pickles → NumPy dtype. BFloat16 has no NumPy
# dtype: it is read as uint16 bit patterns and widened to float32 afterwards.
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _StorageType:
    """Stands in for `torch.FloatStorage` & co. in the pickle: only its name matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A flat storage: filled from the zip entry or the legacy data section."""

    def __init__(self, storage_type: _StorageType, numel: int):
        self.storage_type = storage_type
        self.numel = int(numel)
        self.array: np.ndarray | None = None


class _Tensor:
    """A tensor waiting for its storage's bytes (legacy files store them after the pickle)."""

    def __init__(self, storage, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)

    def to_numpy(self) -> np.ndarray:
        storage = self.storage
        base = storage.array
        if base is None:
            raise _FormatError("a tensor refers to a storage without data")
        if self.size and any(s == 0 for s in self.size):
            array = np.zeros(self.size, dtype=base.dtype)
        else:
            end = self.offset + sum((s - 1) * t for s, t in zip(self.size, self.stride)) + 1
            if self.offset < 0 or end > base.size or any(t < 0 for t in self.stride):
                raise _FormatError("a tensor's size and stride exceed its storage")
            array = np.lib.stride_tricks.as_strided(
                base[self.offset :],
                shape=self.size,
                strides=tuple(t * base.itemsize for t in self.stride),
            ).copy()
        if storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


class _View:
    """A legacy storage view: a slice of a root storage."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root = root
        self.offset = int(offset)
        self.numel = int(numel)
        self.storage_type = root.storage_type

    @property
    def array(self) -> np.ndarray | None:
        if self.root.array is None:
            return None
        return self.root.array[self.offset : self.offset + self.numel]


class _FormatError(Exception):
    """The file is not a state dict this reader understands (torch may still read it)."""


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _Tensor:
    # Covers torch._utils._rebuild_tensor (4 arguments) and _rebuild_tensor_v2
    # (+ requires_grad, backward_hooks[, metadata]), which do not change the values.
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, stream: BinaryIO, storages: dict, make_storage):
        super().__init__(stream)
        self._storages = storages
        self._make_storage = make_storage

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _FormatError(f"unsupported object {module}.{name}") from None

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id:
            raise _FormatError("unexpected persistent id")
        kind = saved_id[0].decode() if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind != "storage":
            raise _FormatError(f"unsupported persistent id {kind!r}")
        return self._make_storage(self._storages, *saved_id[1:])


def _zip_storage(storages: dict, storage_type, key, _location, numel, *_rest) -> _Storage:
    if not isinstance(storage_type, _StorageType):
        raise _FormatError("unsupported storage type")
    key = str(key)
    if key not in storages:
        storages[key] = _Storage(storage_type, numel)
    return storages[key]


def _legacy_storage(storages: dict, storage_type, root_key, _location, numel, view_metadata=None):
    if not isinstance(storage_type, _StorageType):
        raise _FormatError("unsupported storage type")
    root_key = str(root_key)
    if root_key not in storages:
        storages[root_key] = _Storage(storage_type, numel)
    root = storages[root_key]
    if view_metadata is None:
        return root
    _view_key, offset, view_size = view_metadata
    return _View(root, offset, view_size)


def _read_zip(path: str) -> Any:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise _FormatError("the zip archive has no single data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder_name = prefix + "byteorder"
        if byteorder_name in archive.namelist() and archive.read(byteorder_name).strip() != b"little":
            raise _FormatError("big-endian files are not supported")
        storages: dict[str, _Storage] = {}
        with archive.open(pickles[0]) as stream:
            result = _RestrictedUnpickler(io.BytesIO(stream.read()), storages, _zip_storage).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            expected = storage.numel * storage.storage_type.dtype.itemsize
            if len(raw) < expected:
                raise _FormatError(f"storage {key} is truncated")
            storage.array = np.frombuffer(raw[:expected], dtype=storage.storage_type.dtype)
    return result


def _read_legacy(path: str) -> Any:
    with open(path, "rb") as stream:
        header = pickle.Unpickler(stream)
        try:
            if header.load() != _LEGACY_MAGIC_NUMBER:
                raise _FormatError("not a PyTorch file (wrong magic number)")
            if header.load() != _LEGACY_PROTOCOL_VERSION:
                raise _FormatError("unsupported legacy protocol version")
            system_info = header.load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
            raise _FormatError(f"not a PyTorch file ({error})") from None
        if isinstance(system_info, dict) and not system_info.get("little_endian", True):
            raise _FormatError("big-endian files are not supported")
        storages: dict[str, _Storage] = {}
        result = _RestrictedUnpickler(stream, storages, _legacy_storage).load()
        storage_keys = pickle.Unpickler(stream).load()
        for key in storage_keys:
            storage = storages.get(str(key))
            if storage is None:
                raise _FormatError(f"storage {key} is listed but never used")
            (numel,) = struct.unpack("<q", stream.read(8))
            nbytes = numel * storage.storage_type.dtype.itemsize
            raw = stream.read(nbytes)
            if len(raw) != nbytes:
                raise _FormatError(f"storage {key} is truncated")
            storage.numel = numel
            storage.array = np.frombuffer(raw, dtype=storage.storage_type.dtype)
    return result


def _unwrap(state: Any) -> Any:
    """A state dict saved inside a training checkpoint (`{"state_dict": ...}` / `{"model": ...}`)."""
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                return state[wrapper]
    return state


def _strip_data_parallel(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keys saved from `nn.DataParallel` all start with `module.`; the network's own names do not."""
    if arrays and all(name.startswith("module.") for name in arrays):
        return {name[len("module."):]: value for name, value in arrays.items()}
    return arrays


def _tensors_to_numpy(state: Any) -> dict[str, np.ndarray]:
    state = _unwrap(state)
    if not isinstance(state, dict):
        raise _FormatError(f"the file holds a {type(state).__name__}, not a state dict")
    arrays = {}
    for name, value in state.items():
        if isinstance(value, _Tensor):
            arrays[str(name)] = value.to_numpy()
        elif not isinstance(value, (int, float, str, type(None))):
            raise _FormatError(f"entry {name!r} is a {type(value).__name__}, not a tensor")
    return arrays


def _torch_tensors_to_numpy(state: dict) -> dict[str, np.ndarray]:
    import torch

    return {
        str(name): value.detach().float().numpy() if value.dtype == torch.bfloat16 else value.detach().numpy()
        for name, value in state.items()
        if isinstance(value, torch.Tensor)
    }


def _read_with_torch(path: str) -> dict[str, np.ndarray]:
    import torch

    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict: pass the weights file itself."
        )
    return _torch_tensors_to_numpy(state)


def _state_dicts_to_numpy(state: Any) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise _FormatError(f"the file holds a {type(state).__name__}, not a dict")
    entries: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, dict):
            entries[str(name)] = _strip_data_parallel(_tensors_to_numpy(value))
        elif isinstance(value, _Tensor):
            entries[str(name)] = value.to_numpy()
        elif not isinstance(value, (int, float, str, type(None))):
            raise _FormatError(f"entry {name!r} is a {type(value).__name__}, not a state dict or tensor")
    return entries


def _read_state_dicts_with_torch(path: str) -> dict[str, Any]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a dict of state dicts.")
    entries: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, dict):
            entries[str(name)] = _strip_data_parallel(_torch_tensors_to_numpy(value))
        elif isinstance(value, torch.Tensor):
            entries[str(name)] = _torch_tensors_to_numpy({name: value})[str(name)]
    return entries


def _read_file(path: str | os.PathLike, from_pickle, with_torch) -> Any:
    """Parses `path` with `from_pickle` (no torch); falls back to `with_torch` when torch is installed."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"Weights file not found: {path}. Pass the path of an existing .pth file.")
    try:
        state = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
        return from_pickle(state)
    except (_FormatError, pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile,
            KeyError, ValueError, TypeError, AttributeError, IndexError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
    except OSError as error:
        raise CheckpointError(f"Cannot read {path} ({error.strerror or error}): check the file's permissions.") from None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"Cannot read {path} as a PyTorch state dict ({reason}): re-download the file, or "
            "`pip install torch` if it is a valid file in a format psr cannot read alone."
        ) from None
    try:
        return with_torch(path)
    except CheckpointError:
        raise
    except Exception as error:  # torch raises RuntimeError/UnpicklingError/… for broken files
        raise CheckpointError(
            f"Cannot read {path} as a PyTorch state dict ({reason}; torch: {' '.join(str(error).split())}): "
            "re-download the file."
        ) from None


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict file into `{name: array}` without importing torch.

    Also accepts a state dict nested under `"state_dict"` or `"model"` (training checkpoints) and strips
    the `module.` prefix of `nn.DataParallel` when every key has it.

    Tensors become C-contiguous NumPy arrays of their dtype (bfloat16 becomes
    float32); non-tensor entries (e.g. the `_metadata` of `state_dict()`) are
    dropped. Only plain state dicts are read without torch: files holding
    other objects are passed to `torch.load(weights_only=True)` when torch is
    installed.

    Args:
        path: a `.pth` / `.pt` file written by `torch.save(state_dict)`.

    Returns:
        The tensors by state-dict key, in file order.

    Raises:
        CheckpointError: when the file is missing or cannot be read as a state dict.
    """
    return _read_file(
        path,
        lambda state: _strip_data_parallel(_tensors_to_numpy(state)),
        lambda file: _strip_data_parallel(_read_with_torch(file)),
    )


def read_torch_state_dicts(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a file holding several state dicts (`torch.save({"generator": net.state_dict(), ...})`).

    StarGAN v2's `<step>_nets_ema.ckpt` is such a file. Each dict-valued entry
    becomes `{name: array}` (its `module.` prefix stripped as in
    `read_torch_state_dict`); a tensor at the top level is kept as an array;
    other scalars are dropped. Read without torch when possible, else with
    `torch.load(weights_only=True)`.

    Args:
        path: a `.pth` / `.ckpt` file.

    Returns:
        entry name -> state dict (or array), in file order.

    Raises:
        CheckpointError: when the file is missing or cannot be read.
    """
    return _read_file(path, _state_dicts_to_numpy, _read_state_dicts_with_torch)
