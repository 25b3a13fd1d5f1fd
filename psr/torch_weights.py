"""Reads PyTorch `.pth` state dicts into NumPy arrays without importing PyTorch.

Two file formats exist and the public weights psr loads use both:

- the zip format of `torch.save` since PyTorch 1.6: `<prefix>/data.pkl` (the
  pickled dict) and one raw little-endian blob per storage, `<prefix>/data/<key>`;
- the legacy format (torchvision's `alexnet-owt-*.pth`, LPIPS `v0.1/alex.pth`,
  the DRN Cityscapes weights): five consecutive pickles — magic number, protocol
  version, system info, the dict, the list of storage keys — followed by each
  storage as an int64 element count and its raw bytes.

In both, a tensor is pickled as a call of `torch._utils._rebuild_tensor_v2`
(or `_rebuild_tensor` before PyTorch 0.4) on a storage that the pickle names by a
persistent id. The unpickler below resolves only those few globals and refuses
every other one, so reading a file never runs code from it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from psr.errors import CheckpointError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# PyTorch storage class name -> NumPy dtype of its elements.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """Stands for a `torch.*Storage` class inside the pickle."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _StorageRef:
    """A storage named by the pickle; its elements are filled in after unpickling (legacy format)."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self.dtype = storage_type.dtype
        self.key = key
        self.numel = int(numel)
        self.array: np.ndarray | None = None


class _TensorRef:
    """A tensor view of a storage: resolved to an array once the storages are read."""

    def __init__(self, storage, offset: int, size, stride):
        self.storage = storage
        self.offset = int(offset)
        self.size = tuple(int(s) for s in size)
        self.stride = tuple(int(s) for s in stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict: tensors, ordered dicts and storage classes only."""

    _GLOBALS = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, stream, storages: dict):
        super().__init__(stream, encoding="latin1")
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"the file needs {module}.{name}, which a state dict never holds")

    def persistent_load(self, pid):
        # zip: ('storage', type, key, location, numel); legacy: the same plus view metadata.
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views (PyTorch < 0.4 shared storages) are not supported")
        if key not in self.storages:
            self.storages[key] = _StorageRef(storage_type, key, numel)
        return self.storages[key]


def _tensor_array(tensor: _TensorRef) -> np.ndarray:
    flat = tensor.storage.array
    if not tensor.size:
        return np.array(flat[tensor.offset])
    extent = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride) if n > 0)
    if 0 in tensor.size:
        return np.zeros(tensor.size, dtype=flat.dtype)
    if tensor.offset < 0 or extent >= flat.size or min(tensor.stride) < 0:
        raise CheckpointError("a tensor points outside its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :],
        shape=tensor.size,
        strides=tuple(s * flat.itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view)


def _read_zip(path: str) -> tuple[object, dict]:
    storages: dict = {}
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if f"{prefix}byteorder" in archive.namelist():
            big_endian = archive.read(f"{prefix}byteorder").strip() == b"big"
        loaded = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            dtype = storage.dtype.newbyteorder(">" if big_endian else "<")
            storage.array = np.frombuffer(raw, dtype=dtype, count=storage.numel).astype(storage.dtype)
    return loaded, storages


def _read_legacy(path: str) -> tuple[object, dict]:
    storages: dict = {}
    with open(path, "rb") as stream:
        magic = pickle.Unpickler(stream).load()
        if magic != _LEGACY_MAGIC:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
        pickle.Unpickler(stream).load()  # protocol version
        pickle.Unpickler(stream).load()  # system info (byte order, type sizes)
        loaded = _RestrictedUnpickler(stream, storages).load()
        keys = pickle.Unpickler(stream).load()
        for key in keys:
            storage = storages.get(str(key))
            (count,) = struct.unpack("<q", stream.read(8))
            if storage is None or count != storage.numel:
                raise CheckpointError(f"{path}: storage {key} is damaged")
            raw = stream.read(count * storage.dtype.itemsize)
            if len(raw) != count * storage.dtype.itemsize:
                raise EOFError("the file ends inside a storage")
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<")).astype(storage.dtype)
    return loaded, storages


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `.pth` state dict (name -> tensor) into NumPy arrays, without PyTorch.

    Accepts the zip and the legacy `torch.save` formats, a state dict nested
    under `"state_dict"` or `"model"`, and strips a `module.` prefix
    (`nn.DataParallel`) present on every key.

    Args:
        path: the `.pth` file.

    Returns:
        name -> array (float32 stays float32), in file order.

    Raises:
        CheckpointError: the file is missing, truncated, not a PyTorch
            checkpoint, or holds something other than a dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"PyTorch weights file not found: {path}; check the path")
    try:
        reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
        loaded, storages = reader(path)
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, KeyError,
            ValueError, TypeError, AttributeError, IndexError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(
            f"cannot read PyTorch weights {path} ({reason}); the file is truncated or not a "
            ".pth state dict: download it again"
        ) from None
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, _TensorRef) for v in loaded.values()):
        raise CheckpointError(
            f"{path} does not hold a state dict (name -> tensor); pass the weights file itself"
        )
    if any(storage.array is None for storage in storages.values()):
        raise CheckpointError(f"{path}: a storage is missing; download the file again")
    state_dict = {str(name): _tensor_array(tensor) for name, tensor in loaded.items()}
    if state_dict and all(name.startswith("module.") for name in state_dict):
        state_dict = {name[len("module.") :]: value for name, value in state_dict.items()}
    return state_dict
