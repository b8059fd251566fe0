"""Read PyTorch ``.pth`` / ``.pt`` checkpoints into NumPy, without torch and without running code.

A ``.pth`` file is a pickle, and unpickling an untrusted pickle with the standard machinery
(``torch.load(weights_only=False)``, ``pickle.load``) can import and call anything the file
names. This reader never does: its unpickler resolves only the handful of globals a tensor
state dict needs, each to a NumPy-producing stand-in defined here, and refuses every other
global with :class:`UnsafeCheckpointError` *before* anything is imported or called. Nothing
from torch is imported; torch need not be installed.

Both serialisation formats of ``torch.save`` are read:

* zip (the default since torch 1.6): ``<archive>/data.pkl`` (the pickle), one
  ``<archive>/data/<key>`` entry of raw bytes per storage, ``<archive>/byteorder``.
* legacy (``_use_new_zipfile_serialization=False``): five consecutive pickles -- the magic
  number, the protocol version, a system-info dict, the object, the sorted list of storage
  keys -- then, per key, an int64 element count followed by that storage's raw bytes.

Tensors become C-contiguous NumPy arrays that honour the storage offset, size and stride (so
transposed or sliced views come out right) and the storage's dtype: float32, float64, float16,
bfloat16 (returned as float32: its bits are the top half of a float32), int64, int32, int16,
int8, uint8, bool and complex. Several tensors viewing one storage each get their own copy.
A tensor whose elements overlap in its storage (stride 0, as ``expand`` makes) is returned as
a read-only strided view of the storage, never expanded. ``nn.Parameter`` becomes a plain array.

Allowed globals: ``torch._utils._rebuild_tensor``, ``_rebuild_tensor_v2``,
``_rebuild_tensor_v3``, ``_rebuild_parameter``, ``_rebuild_parameter_with_state``; the
``torch.*Storage`` classes and ``torch.storage.UntypedStorage``; ``torch`` dtypes,
``torch.Size``, ``torch.device``; ``collections.OrderedDict``; ``builtins`` set, frozenset,
complex, slice, bytearray (from bytes or a latin-1 string, never from a count); and
``_codecs.encode`` with the latin-1 codec only (how protocol 2 stores ``bytes``).

A hostile file gets no more than a genuine one: besides running no code and reading nothing out
of bounds, a load makes at most ``_BUDGET_FACTOR`` (16) times the file's size plus 16 MiB of
data (zip entries are decompressed only as far as a storage needs), error messages hold only
truncated reprs, shared references are walked once, nesting is capped at 64 levels and a state
dict at a million entries. Every failure is one :class:`CheckpointError` that names the file.
"""

import codecs
import collections
import contextvars
import io
import os
import pickle
import reprlib
import struct
import tarfile
import zipfile

import numpy as np

__all__ = [
    "CheckpointError",
    "UnsafeCheckpointError",
    "TorchDtype",
    "UnresolvedObject",
    "load_pth",
    "read_state_dict",
]

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

#: A load may hold at most this many times the file's size in bytes it made (decompressed
#: entries, decoded storages, tensor copies, objects built by the allowed globals) ...
_BUDGET_FACTOR = 16
#: ... plus this many bytes, so that a tiny file still gets room for its metadata.
_BUDGET_FLOOR = 16 << 20
#: Containers nested deeper than this are refused (real checkpoints nest a handful of levels).
_MAX_DEPTH = 64
#: A state dict with more entries than this is refused (an R50 detector has about 400).
_MAX_ENTRIES = 1_000_000
#: The one codec ``torch.save`` uses with ``_codecs.encode`` (protocol 2 ``bytes``).
_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1"}
#: Compression methods a zip checkpoint may use: stored (what torch writes) and deflate.
_ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
for _attribute in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_SHORT, _attribute, 4)
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 60


def _short(value, limit=200):
    """A bounded ``repr`` of ``value`` for error messages (shared or huge data stays short).

    Args:
        value: any object read from a file.
        limit: the most characters returned.
    Returns:
        ``str``: at most ``limit`` characters, ``...`` marking a cut.
    """
    try:
        text = _SHORT.repr(value)
    except Exception:  # a stand-in's repr that fails: name the type only
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_text(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint (corrupt, truncated, unsupported)."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle names a global a plain checkpoint never needs (nothing was run).

    Attributes:
        global_name: the refused ``module.name`` as written in the file.
        path: the file.
    """

    def __init__(self, message, global_name=None, path=None):
        super().__init__(message)
        self.global_name = global_name
        self.path = path


class _Refused(Exception):
    """Raised inside the unpickler; turned into UnsafeCheckpointError with the path attached."""

    def __init__(self, global_name):
        super().__init__(global_name)
        self.global_name = global_name


class _Malformed(Exception):
    """Raised inside the unpickler; turned into CheckpointError with the path attached."""


class _Budget:
    """The bytes one load may make: ``_BUDGET_FACTOR`` times the file's size plus ``_BUDGET_FLOOR``.

    Args:
        file_size: the checkpoint's size in bytes.
    """

    def __init__(self, file_size):
        self.file_size = file_size
        self.limit = _BUDGET_FACTOR * file_size + _BUDGET_FLOOR
        self.used = 0

    def check(self, nbytes, what):
        """Raise ``_Malformed`` if ``nbytes`` more would pass the limit (nothing is charged)."""
        if self.used + nbytes > self.limit:
            raise _Malformed(
                f"{what} would bring the bytes this load made to {self.used + nbytes:,}, past the limit of "
                f"{self.limit:,} ({_BUDGET_FACTOR} x the file's {self.file_size:,} bytes + {_BUDGET_FLOOR:,}); "
                "no genuine checkpoint needs that much"
            )

    def charge(self, nbytes, what):
        """Count ``nbytes`` made for ``what``; raise ``_Malformed`` past the limit."""
        self.check(nbytes, what)
        self.used += nbytes


# The budget of the load in progress (a context variable, so concurrent loads keep their own).
_CURRENT_BUDGET = contextvars.ContextVar("keras_gfocal_pth_budget", default=None)


def _charge(nbytes, what):
    budget = _CURRENT_BUDGET.get()
    if budget is not None:
        budget.charge(nbytes, what)


# ----------------------------------------------------------------------------- dtypes, storages
class _Frozen:
    """Base of the stand-ins handed to the pickle: no instance dict, no ``__setstate__``."""

    __slots__ = ()

    def __setstate__(self, state):
        raise _Malformed(f"the pickle tries to set the state of {self!r}")

    def __setattr__(self, name, value):
        raise AttributeError(f"{self!r} is read-only (attribute {name!r})")


class TorchDtype(_Frozen):
    """Stand-in for a ``torch.dtype`` found in a checkpoint (e.g. in ``_rebuild_tensor_v3``).

    Attributes:
        name: torch's name, e.g. ``"float32"``.
        numpy_dtype: the NumPy dtype its values are returned as (bfloat16 -> float32).
    """

    __slots__ = ("name", "numpy_dtype", "_storage_dtype")

    def __init__(self, name, storage_dtype, numpy_dtype=None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_storage_dtype", np.dtype(storage_dtype))
        object.__setattr__(self, "numpy_dtype", np.dtype(numpy_dtype or storage_dtype))

    def __repr__(self):
        return f"torch.{self.name}"

    def __eq__(self, other):
        return isinstance(other, TorchDtype) and other.name == self.name

    def __hash__(self):
        return hash(("TorchDtype", self.name))


# torch dtype name -> (little-endian storage dtype as written, NumPy dtype returned)
_DTYPE_TABLE = {
    "float32": ("<f4", None),
    "float64": ("<f8", None),
    "float16": ("<f2", None),
    "bfloat16": ("<u2", "float32"),
    "int64": ("<i8", None),
    "int32": ("<i4", None),
    "int16": ("<i2", None),
    "int8": ("i1", None),
    "uint8": ("u1", None),
    "uint16": ("<u2", None),
    "uint32": ("<u4", None),
    "uint64": ("<u8", None),
    "bool": ("u1", "bool"),
    "complex64": ("<c8", None),
    "complex128": ("<c16", None),
}
_DTYPES = {name: TorchDtype(name, s, n) for name, (s, n) in _DTYPE_TABLE.items()}
_DTYPE_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
}
for _alias, _name in _DTYPE_ALIASES.items():
    _DTYPES[_alias] = _DTYPES[_name]

_STORAGE_CLASSES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "UntypedStorage": "uint8",
}


class _StorageType(_Frozen):
    """Stand-in for a ``torch.*Storage`` class; appears only inside persistent ids."""

    __slots__ = ("name", "dtype")

    def __init__(self, name, dtype):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __repr__(self):
        return f"torch.{self.name}"


_STORAGE_TYPES = {name: _StorageType(name, _DTYPES[d]) for name, d in _STORAGE_CLASSES.items()}


class _Storage:
    """One storage of a checkpoint: raw bytes (possibly filled in later, legacy format)."""

    __slots__ = ("key", "dtype", "numel", "raw", "byteorder", "_decoded", "__weakref__")

    def __init__(self, key, dtype, numel, byteorder="little"):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.raw = None
        self.byteorder = byteorder
        self._decoded = {}

    def __setstate__(self, state):
        raise _Malformed("the pickle tries to set the state of a storage")

    def array(self, dtype=None):
        """The storage as a read-only 1-D array of ``dtype`` (default: its own), native order."""
        dtype = dtype or self.dtype
        if dtype.name in self._decoded:
            return self._decoded[dtype.name]
        if self.raw is None:
            raise _Malformed(f"storage {_short(self.key)} has no data")
        raw_dtype = dtype._storage_dtype
        if self.byteorder == "big" and raw_dtype.itemsize > 1:
            raw_dtype = raw_dtype.newbyteorder(">")
        count = len(self.raw) // raw_dtype.itemsize
        values = np.frombuffer(self.raw, dtype=raw_dtype, count=count)
        if dtype.name == "bfloat16":
            _charge(8 * count, f"decoding bfloat16 storage {_short(self.key)}")
            values = (values.astype(np.uint32) << 16).view(np.float32)
        elif dtype.name == "bool":
            _charge(count, f"decoding bool storage {_short(self.key)}")
            values = values != 0
        else:
            if not raw_dtype.isnative:
                _charge(len(self.raw), f"byte-swapping storage {_short(self.key)}")
            values = values.astype(raw_dtype.newbyteorder("="), copy=False)
        values.flags.writeable = False
        self._decoded[dtype.name] = values
        return values


class _TensorRef:
    """A tensor met in the pickle; materialised once every storage has its bytes."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype")
    __hash__ = None  # tensors are not hashable: a pickle using one as a key or set item fails

    def __init__(self, storage, offset, size, stride, dtype=None):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype or storage.dtype

    def __setstate__(self, state):
        raise _Malformed("the pickle tries to set the state of a tensor")

    def materialise(self):
        """The tensor as an array: a C-contiguous copy, or, when its elements overlap in the
        storage (stride 0, ``expand``), a read-only view of the storage (never expanded)."""
        size, stride, offset = _check_geometry(self.offset, self.size, self.stride)
        data = self.storage.array(self.dtype)
        if any(s == 0 for s in size):
            return np.zeros(size, data.dtype)
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= data.shape[0]:
            raise _Malformed(
                f"tensor of size {_short(size)}, stride {_short(stride)}, offset {offset} reads past the end of "
                f"its storage ({data.shape[0]} elements)"
            )
        view = np.lib.stride_tricks.as_strided(
            data[offset:], shape=size, strides=tuple(st * data.itemsize for st in stride), writeable=False
        )
        if _overlaps(size, stride):
            return view  # read-only, no bigger in memory than the storage it views
        _charge(view.nbytes, f"copying a tensor of size {_short(size)}")
        return np.array(view, order="C")


def _overlaps(size, stride):
    """Whether two indices of a tensor of ``size`` / ``stride`` reach one storage element.

    Args:
        size, stride: tuples of non-negative ints, no size 0.
    Returns:
        ``bool``: False when every element is distinct (then a copy is no bigger than the part
        of the storage it covers).
    """
    extent = 0  # the span, in elements, of the dimensions already checked, less one
    for n, st in sorted((pair for pair in zip(size, stride) if pair[0] > 1), key=lambda pair: pair[1]):
        if st <= extent:
            return True
        extent += (n - 1) * st
    return False


def _int_tuple(value, what):
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _Malformed(f"bad tensor {what}: {_short(value)}")
    return value


def _check_geometry(storage_offset, size, stride):
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise _Malformed(f"bad storage offset {_short(storage_offset)}")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _Malformed(f"size {size} and stride {stride} differ in length")
    return size, stride, storage_offset


def _tensor(storage, storage_offset, size, stride, dtype=None):
    if not isinstance(storage, _Storage):
        raise _Malformed(f"a tensor is built on {type(storage).__name__}, not on a storage")
    size, stride, storage_offset = _check_geometry(storage_offset, size, stride)
    return _TensorRef(storage, storage_offset, size, stride, dtype)


# Stand-ins for torch._utils; the signatures accept what every torch version writes.
def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, *_ignored):
    if not isinstance(dtype, TorchDtype):
        raise _Malformed(f"_rebuild_tensor_v3 with dtype {_short(dtype)}")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _codecs_encode(text, encoding="utf-8", *_ignored):
    """``_codecs.encode`` as protocol 2 uses it for ``bytes``: latin-1 only (other codecs, e.g.
    punycode, can take quadratic time)."""
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise _Malformed("_codecs.encode with non-string arguments")
    if encoding.lower() not in _LATIN1:
        raise _Malformed(f"_codecs.encode with codec {_short(encoding)} (torch writes only latin1)")
    _charge(len(text), "_codecs.encode")
    return codecs.encode(text, "latin1")


def _bytearray(source=b"", encoding=None, *_ignored):
    """``bytearray`` as pickles rebuild one: from bytes, or from a latin-1 string (protocol 2);
    never from a count (``bytearray(n)`` would allocate whatever the file asks)."""
    if isinstance(source, str) and isinstance(encoding, str) and encoding.lower() in _LATIN1:
        _charge(len(source), "bytearray")
        return bytearray(source, "latin1")
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        _charge(len(source), "bytearray")
        return bytearray(source)
    raise _Malformed("bytearray from anything but bytes or a latin-1 string")


def _sized(function, what):
    """``function`` (``set``, ``frozenset``, ``tuple``) on a list or tuple, with its size charged."""

    def build(values=()):
        if not isinstance(values, (list, tuple, set, frozenset)):
            raise _Malformed(f"{what} of a {type(values).__name__}")
        _charge(8 * len(values) + 64, what)
        return function(values)

    return build


def _torch_device(*args):
    if len(args) > 2 or not all(isinstance(a, (str, int)) and not isinstance(a, bool) for a in args):
        raise _Malformed("torch.device with arguments other than a name and an index")
    return ":".join(_short_text(a, 40) for a in args)


class _SafeCallable(_Frozen):
    """A vetted callable handed to the pickle in place of the named global."""

    __slots__ = ("_function", "_name")

    def __init__(self, function, name):
        object.__setattr__(self, "_function", function)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args, **kwargs):
        try:
            return self._function(*args, **kwargs)
        except (_Malformed, _Refused):
            raise
        except Exception as error:  # a bad argument list written into the pickle
            raise _Malformed(f"{self._name}{_short(args)}: {_short_text(error, 200)}") from None

    def __repr__(self):
        return f"<stand-in for {self._name}>"


_SAFE_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _sized(tuple, "torch.Size"),
    ("torch", "device"): _torch_device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): _sized(set, "set"),
    ("builtins", "frozenset"): _sized(frozenset, "frozenset"),
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "bytearray"): _bytearray,
    ("_codecs", "encode"): _codecs_encode,
}
_SAFE_GLOBALS = {key: _SafeCallable(fn, ".".join(key)) for key, fn in _SAFE_FUNCTIONS.items()}
_SAFE_GLOBALS.update({("torch", name): st for name, st in _STORAGE_TYPES.items()})
_SAFE_GLOBALS[("torch.storage", "UntypedStorage")] = _STORAGE_TYPES["UntypedStorage"]
_SAFE_GLOBALS.update({("torch", name): dt for name, dt in _DTYPES.items()})

# Protocol-2 pickles written by Python 2 name some modules the old way.
_MODULE_RENAMES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
# Where a refused global really lives, for a readable message (os.system pickles as posix.system).
_MODULE_ALIASES = {"posix": "os", "nt": "os"}


# ----------------------------------------------------------------------------- unknown globals
class UnresolvedObject:
    """What an unknown global becomes with ``allow_unknown_globals=True``: inert data.

    Nothing is imported or called; the object only records what the pickle said.

    Attributes:
        global_name: ``module.name`` from the file.
        args: the arguments the pickle passed to it, if it was called.
        state: what the pickle passed to ``__setstate__``, if anything.
        items: list / dict items the pickle appended or set, if any.
    """

    _global_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "args", args + ((kwargs,) if kwargs else ()))
        object.__setattr__(obj, "state", None)
        object.__setattr__(obj, "items", [])
        return obj

    def __init__(self, *args, **kwargs):
        pass

    @property
    def global_name(self):
        return type(self)._global_name

    def __setstate__(self, state):
        object.__setattr__(self, "state", state)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self!r} is read-only (attribute {name!r})")

    def __setitem__(self, key, value):
        self.items.append((key, value))

    def append(self, value):
        self.items.append(value)

    def extend(self, values):
        self.items.extend(values)

    def __repr__(self):
        # Not the arguments: they may hold this object again, and a repr must stay bounded.
        return f"<unresolved {_short_text(self.global_name, 100)}, {len(self.args)} argument(s)>"


# ----------------------------------------------------------------------------- the unpickler
class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, persistent_load=None, allow_unknown_globals=False):
        super().__init__(file, encoding="utf-8")
        self._persistent = persistent_load
        self._allow_unknown = allow_unknown_globals
        self._unresolved = {}

    def find_class(self, module, name):
        module = _MODULE_RENAMES.get(module, module)
        found = _SAFE_GLOBALS.get((module, name))
        if found is not None:
            return found
        qualified = f"{module}.{name}"
        if not self._allow_unknown:
            raise _Refused(qualified)
        if qualified not in self._unresolved:
            self._unresolved[qualified] = type(
                name if name.isidentifier() else "Unresolved", (UnresolvedObject,), {"_global_name": qualified}
            )
        return self._unresolved[qualified]

    def persistent_load(self, pid):
        if self._persistent is None:
            raise _Malformed(f"unexpected persistent id {_short(pid)}")
        return self._persistent(pid)


def _decode(value):
    return value.decode("ascii") if isinstance(value, bytes) else value


def _storage_pid(pid, legacy):
    """Check a storage persistent id; return (key, dtype, numel, view) ."""
    if not isinstance(pid, tuple) or not pid:
        raise _Malformed(f"bad persistent id {_short(pid)}")
    typename = _decode(pid[0])
    if typename != "storage":
        raise _Malformed(f"persistent id of kind {_short(typename)} (only tensor storages are supported)")
    expected = 6 if legacy else 5
    if len(pid) != expected:
        raise _Malformed(f"bad storage persistent id {_short(pid)}")
    storage_type, key, _location, numel = pid[1:5]
    view = pid[5] if legacy else None
    if not isinstance(storage_type, _StorageType):
        raise _Malformed(f"storage of type {_short(storage_type)}")
    if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise _Malformed(f"bad storage size {_short(numel)}")
    if not isinstance(key, (str, bytes)):
        raise _Malformed(f"bad storage key {_short(key)}")
    return _decode(key), storage_type.dtype, numel, view


def _resolve(obj, memo, depth=0):
    """Replace every tensor reference in ``obj`` (containers walked in place) by its array.

    ``memo`` maps ``id(original)`` to ``(original, result)``; holding the original keeps its id
    from being reused by a new object during the walk. Each object is walked once however often
    the pickle shares it, and nesting deeper than ``_MAX_DEPTH`` is refused.
    """
    key = id(obj)
    if key in memo:
        return memo[key][1]
    if depth > _MAX_DEPTH:
        raise _Malformed(f"containers nested more than {_MAX_DEPTH} deep")
    depth += 1
    if isinstance(obj, _TensorRef):
        result = obj.materialise()
    elif isinstance(obj, _Storage):
        _charge(len(obj.raw or b""), f"copying storage {_short(obj.key)}")
        result = np.array(obj.array())
    elif isinstance(obj, dict):
        memo[key] = (obj, obj)
        for k in list(obj):
            obj[k] = _resolve(obj[k], memo, depth)
        return obj
    elif isinstance(obj, list):
        memo[key] = (obj, obj)
        obj[:] = [_resolve(v, memo, depth) for v in obj]
        return obj
    elif type(obj) is tuple:
        memo[key] = (obj, obj)  # a cycle back to this tuple keeps the original
        result = tuple(_resolve(v, memo, depth) for v in obj)
    elif isinstance(obj, UnresolvedObject):
        memo[key] = (obj, obj)
        object.__setattr__(obj, "args", _resolve(obj.args, memo, depth))
        object.__setattr__(obj, "state", _resolve(obj.state, memo, depth))
        obj.items[:] = [_resolve(v, memo, depth) for v in obj.items]
        return obj
    else:
        return obj
    memo[key] = (obj, result)
    return result


# ----------------------------------------------------------------------------- the two formats
def _read_entry(archive, entry, nbytes, budget):
    """At most ``nbytes`` of zip entry ``entry`` (``nbytes`` None: all of it), charged to ``budget``.

    Only the bytes asked for are decompressed. Encrypted entries and compression methods other
    than stored and deflate are refused before any byte is read.
    """
    info = archive.getinfo(entry)
    if info.flag_bits & 0x1:
        raise _Malformed(f"zip entry {_short(entry)} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise _Malformed(
            f"zip entry {_short(entry)} uses compression method {info.compress_type} "
            "(a checkpoint is stored or deflated)"
        )
    want = info.file_size if nbytes is None else nbytes
    budget.check(want, f"zip entry {_short(entry)} ({want:,} bytes)")
    with archive.open(info) as stream:
        raw = stream.read(want)
    budget.charge(len(raw), f"zip entry {_short(entry)}")
    return raw


def _load_zip(handle, name, allow_unknown_globals, budget):
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{name}: truncated or corrupt zip archive ({_short_text(error)})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                raise CheckpointError(f"{name}: a TorchScript archive, not a torch.save checkpoint")
            raise CheckpointError(f"{name}: a zip archive without exactly one <archive>/data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = _read_entry(archive, prefix + "byteorder", 16, budget).decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{name}: unknown byte order {_short(byteorder)}")
        storages = {}

        def persistent_load(pid):
            key, dtype, numel, _ = _storage_pid(pid, legacy=False)
            if key in storages:
                return storages[key]
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise _Malformed(f"missing storage entry {_short(entry)}")
            nbytes = numel * dtype._storage_dtype.itemsize
            raw = _read_entry(archive, entry, nbytes, budget)
            if len(raw) < nbytes:
                raise _Malformed(f"storage {_short(entry)} holds {len(raw)} bytes, {nbytes} expected")
            storage = _Storage(key, dtype, numel, byteorder)
            storage.raw = raw
            storages[key] = storage
            return storage

        data = _read_entry(archive, pickles[0], None, budget)
        unpickler = _RestrictedUnpickler(io.BytesIO(data), persistent_load, allow_unknown_globals)
        return unpickler.load()


def _load_legacy(handle, name, allow_unknown_globals, budget):
    def plain():
        return _RestrictedUnpickler(handle, None, allow_unknown_globals).load()

    magic = plain()
    if type(magic) is not int or magic != _MAGIC_NUMBER:
        raise CheckpointError(f"{name}: a pickle, but not a PyTorch checkpoint (no torch magic number)")
    version = plain()
    if type(version) is not int or version != _PROTOCOL_VERSION:
        raise CheckpointError(f"{name}: unsupported legacy protocol version {_short(version)}")
    plain()  # system info; storages are little-endian whatever it says (see below)
    roots = {}
    views = {}

    def persistent_load(pid):
        key, dtype, numel, view = _storage_pid(pid, legacy=True)
        storage = roots.get(key)
        if storage is None:
            storage = roots[key] = _Storage(key, dtype, numel)
        elif storage.dtype != dtype:
            raise _Malformed(f"storage {_short(key)} used with two dtypes")
        if view is None:
            return storage
        if not isinstance(view, tuple) or len(view) != 3:
            raise _Malformed(f"bad storage view {_short(view)}")
        view_key, offset, view_numel = _decode(view[0]), view[1], view[2]
        if not isinstance(view_numel, int) or isinstance(view_numel, bool) or view_numel < 0:
            raise _Malformed(f"bad storage view size {_short(view_numel)}")
        if view_key not in views:
            views[view_key] = (_Storage(view_key, dtype, view_numel), storage, offset)
        return views[view_key][0]

    result = _RestrictedUnpickler(handle, persistent_load, allow_unknown_globals).load()
    keys = plain()
    if not isinstance(keys, list) or not all(isinstance(k, (str, bytes)) for k in keys):
        raise CheckpointError(f"{name}: bad storage key list")
    keys = [_decode(k) for k in keys]
    if set(keys) != set(roots):
        raise CheckpointError(f"{name}: the storage key list does not match the storages used")
    for key in keys:
        storage = roots[key]
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{name}: truncated (storage {_short(key)} missing)")
        # torch writes the element count and the data little-endian on every machine.
        (count,) = struct.unpack("<q", header)
        if count != storage.numel:
            raise CheckpointError(f"{name}: storage {_short(key)} has {count} elements, {storage.numel} expected")
        nbytes = count * storage.dtype._storage_dtype.itemsize
        if nbytes > budget.file_size:  # read() would allocate what the file claims before reading
            raise CheckpointError(
                f"{name}: truncated (storage {_short(key)} needs {nbytes:,} bytes; the file has {budget.file_size:,})"
            )
        budget.charge(nbytes, f"storage {_short(key)}")
        raw = handle.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"{name}: truncated (storage {_short(key)} has {len(raw)} of {nbytes} bytes)")
        storage.raw = raw
    for view, root, offset in views.values():
        itemsize = root.dtype._storage_dtype.itemsize
        if not isinstance(offset, int) or offset < 0 or offset + view.numel > root.numel:
            raise CheckpointError(f"{name}: storage view {_short(view.key)} out of range")
        view.raw = memoryview(root.raw)[offset * itemsize : (offset + view.numel) * itemsize]
    return result


def load_pth(path, allow_unknown_globals=False):
    """Load a ``torch.save`` file (zip or legacy format) with every tensor as a NumPy array.

    Whatever the file holds, nothing from it is imported or called, the load makes at most
    ``16 x`` the file's size ``+ 16 MiB`` of data (decompressed entries, decoded storages,
    tensor copies), containers nest at most 64 deep, and every failure is one
    :class:`CheckpointError` naming the file.

    Args:
        path: a file path (``str`` / ``os.PathLike``) or a seekable binary file object.
        allow_unknown_globals: by default (False) a pickle that names any global outside the
            allow-list (see the module docstring) is refused with
            :class:`UnsafeCheckpointError`. With True such globals become inert
            :class:`UnresolvedObject` records instead -- still nothing is imported or called --
            so that checkpoints whose metadata holds other objects (e.g. training-loop state
            saved by MMEngine) can be read for their tensors.

    Returns:
        The saved object (dicts, ``OrderedDict``, lists, tuples, scalars, strings) with tensors
        and parameters as C-contiguous ``np.ndarray`` (bfloat16 as float32); a tensor whose
        elements overlap in its storage (stride 0, e.g. ``expand``) comes back as a read-only
        strided view of that storage instead of being expanded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: the pickle names a global that a plain checkpoint never needs.
        CheckpointError: the file is not a torch checkpoint, is truncated, corrupt or malformed,
            or asks for more memory or nesting than the limits above.
    """
    if hasattr(path, "read"):
        return _load_handle(path, getattr(path, "name", "<stream>"), allow_unknown_globals)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(2, "no such checkpoint file", name)
    if os.path.isdir(name):
        raise CheckpointError(f"{name}: is a directory, not a checkpoint file")
    with open(name, "rb") as handle:
        return _load_handle(handle, name, allow_unknown_globals)


def _load_handle(handle, name, allow_unknown_globals):
    name = _short_text(name, 300)
    try:
        start = handle.tell()
        file_size = handle.seek(0, os.SEEK_END) - start
        handle.seek(start)
        head = handle.read(512)
        handle.seek(start)
    except OSError as error:
        raise CheckpointError(f"{name}: cannot be read ({_short_text(error)})") from None
    budget = _Budget(file_size)
    token = _CURRENT_BUDGET.set(budget)
    try:
        if head[:4] == b"PK\x03\x04":
            result = _load_zip(handle, name, allow_unknown_globals, budget)
        elif len(head) >= 262 and head[257:262] == b"ustar" and tarfile.is_tarfile(handle):
            raise CheckpointError(f"{name}: a pre-1.0 tar-format torch checkpoint, which is not supported")
        elif not head[:1] == b"\x80":
            raise CheckpointError(f"{name}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
        else:
            result = _load_legacy(handle, name, allow_unknown_globals, budget)
        return _resolve(result, {})
    except _Refused as refused:
        shown = _short_text(refused.global_name, 200)
        module, _, attr = shown.partition(".")
        if module in _MODULE_ALIASES:
            shown = f"{shown} ({_MODULE_ALIASES[module]}.{attr})"
        raise UnsafeCheckpointError(
            f"{name}: refused to load: this is not a plain checkpoint. Its pickle names the global "
            f"{shown}, which a tensor state dict never needs (nothing was imported or called). "
            "Load it only if you trust its origin, with torch.load.",
            global_name=refused.global_name,
            path=name,
        ) from None
    except _Malformed as error:
        raise CheckpointError(f"{name}: corrupt or unsupported checkpoint: {_short_text(error)}") from None
    except CheckpointError:
        raise
    except Exception as error:  # the boundary: whatever the bytes made go wrong
        # Everything the parsers below can raise on bad bytes (pickle, zipfile, zlib, struct,
        # NumPy, the recursion and memory limits) is a property of the file: one line, no traceback.
        raise CheckpointError(
            f"{name}: truncated or corrupt checkpoint ({type(error).__name__}: {_short_text(error)})"
        ) from None
    finally:
        _CURRENT_BUDGET.reset(token)


def _flatten(tree, name):
    """``tree``'s tensors as ``{dotted key: array}``, walked as a graph.

    A dict met a second time (shared or cyclic) is refused, never walked again; so are nesting
    deeper than ``_MAX_DEPTH`` and more than ``_MAX_ENTRIES`` entries.
    """
    out = {}
    seen = {id(tree)}
    stack = [(iter(tree.items()), "", 0)]
    while stack:
        items, prefix, depth = stack[-1]
        for key, value in items:
            if not isinstance(key, str):
                raise CheckpointError(f"{name}: state-dict key {_short(key)} is not a string")
            full = prefix + key
            if isinstance(value, np.ndarray):
                out[full] = value
                if len(out) > _MAX_ENTRIES:
                    raise CheckpointError(f"{name}: the state dict has more than {_MAX_ENTRIES:,} entries")
            elif isinstance(value, dict):
                if id(value) in seen:
                    raise CheckpointError(
                        f"{name}: state-dict entry {_short(full)} is a dict met before (shared or cyclic)"
                    )
                if depth + 1 > _MAX_DEPTH:
                    raise CheckpointError(f"{name}: the state dict nests more than {_MAX_DEPTH} deep")
                seen.add(id(value))
                stack.append((iter(value.items()), full + ".", depth + 1))
                break
            else:
                raise CheckpointError(
                    f"{name}: state-dict entry {_short(full)} is a {type(value).__name__}, not a tensor"
                )
        else:
            stack.pop()
    return out


def read_state_dict(path, allow_unknown_globals=False):
    """Read a checkpoint's weights as a flat ``{name: np.ndarray}``, and its metadata.

    Args:
        path: as for :func:`load_pth`.
        allow_unknown_globals: as for :func:`load_pth`.

    Returns:
        ``(state_dict, meta)``: ``state_dict`` maps each parameter / buffer name (in file order;
        nested dicts are joined with ``.``) to its array. It is the file's ``"state_dict"``
        entry (MMDetection / MMCV checkpoints ``{"meta": ..., "state_dict": ...}``), else its
        ``"model"`` entry (e.g. torchvision / detectron-style training checkpoints), else the
        file's top-level dict itself (a bare ``model.state_dict()``). ``meta`` is the file's
        ``"meta"`` entry, or None.

    Raises:
        CheckpointError: no state dict found, an entry is not a tensor, a dict is shared or
        cyclic, nesting is deeper than 64 or there are over a million entries; and everything
        :func:`load_pth` raises.
    """
    name = getattr(path, "name", "<stream>") if hasattr(path, "read") else os.fspath(path)
    name = _short_text(name, 300)
    loaded = load_pth(path, allow_unknown_globals=allow_unknown_globals)
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{name}: holds a {type(loaded).__name__}, not a dict of tensors")
    meta = loaded.get("meta") if isinstance(loaded.get("meta"), dict) else None
    for wrapper in ("state_dict", "model"):
        if isinstance(loaded.get(wrapper), dict):
            return _flatten(loaded[wrapper], name), meta
    if loaded and all(isinstance(v, (np.ndarray, dict)) for v in loaded.values()):
        return _flatten(loaded, name), None
    keys = [_short_text(k, 40) for k in list(loaded)[:10]]
    raise CheckpointError(
        f"{name}: no state dict found (top-level keys: {keys}); "
        "expected a 'state_dict' or 'model' entry, or a bare state dict"
    )
