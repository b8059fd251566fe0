"""Hostile ``.pth`` files, assembled byte by byte from pickle opcodes and zip records (no torch).

Each builder returns the file's bytes. They are small (a few bytes to a few MB) and ask for
what a hostile file asks for: gigabytes from a stride-0 tensor or a deflate bomb, exponential
work from shared references, quadratic work from a codec, errors from a zip flag. Used by
``test_hostile_pth.py`` (the reader) and ``test_convert_cli.py`` (the converter and the CLI);
its opcode helpers also assemble ``test_pth.py``'s well-formed pickles, and
``constant_checkpoint`` the converters' full-size files.
"""

import struct
import zipfile
import zlib

# ----------------------------------------------------------------------------- pickle opcodes


def glob(module, name):
    """``GLOBAL module.name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value):
    """``BINUNICODE value``."""
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def integer(value):
    """``BININT`` for a 32-bit value, ``LONG1`` otherwise."""
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*parts):
    """``MARK parts TUPLE``."""
    return b"(" + b"".join(parts) + b"t"


def put(index):
    """``LONG_BINPUT index`` (memoise the top of the stack)."""
    return b"r" + struct.pack("<I", index)


def get(index):
    """``LONG_BINGET index``."""
    return b"j" + struct.pack("<I", index)


def call(function, *args):
    """``function(*args)`` with ``REDUCE``."""
    return function + tup(*args) + b"R"


def storage(key, numel, storage_class="FloatStorage", legacy=False):
    """A storage persistent id (``BINPERSID``), as torch.save writes it."""
    fields = [text("storage"), glob("torch", storage_class), text(key), text("cpu"), integer(numel)]
    if legacy:
        fields.append(b"N")
    return tup(*fields) + b"Q"


def tensor(storage_ops, size, stride, offset=0):
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    hooks = call(glob("collections", "OrderedDict"))
    return call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage_ops,
        integer(offset),
        tup(*map(integer, size)),
        tup(*map(integer, stride)),
        b"\x89",
        hooks,
    )


def dictionary(items):
    """A dict of ``(key, opcodes)`` pairs."""
    return b"}(" + b"".join(text(k) + v for k, v in items) + b"u"


def pickled(body):
    """A protocol-2 pickle of the object ``body`` pushes."""
    return b"\x80\x02" + body + b"."


def checkpoint(state_ops, meta_ops=None):
    """An MMDetection-style ``{"meta": ..., "state_dict": ...}`` pickle."""
    items = [("state_dict", state_ops)] + ([("meta", meta_ops)] if meta_ops is not None else [])
    return pickled(dictionary(items))


# ----------------------------------------------------------------------------- zip archives


def torch_zip(data_pkl, storages):
    """A zip checkpoint as torch.save writes it (stored entries), with ``zipfile``."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
    return buffer.getvalue()


def zipped(data_pkl):
    """``torch_zip`` with no storages."""
    return torch_zip(data_pkl, {})


def raw_zip(entries):
    """A zip archive written record by record, so that any header field can lie.

    Args:
        entries: ``(name, payload, method, flags, uncompressed_size, crc)`` tuples; ``payload``
            is written as is (already compressed for method 8).
    Returns:
        ``bytes``: local headers and payloads, the central directory, the end record.
    """
    body, central = b"", b""
    for name, payload, method, flags, size, crc in entries:
        encoded = name.encode()
        offset = len(body)
        fields = (20, flags, method, 0, 0x21, crc, len(payload), size, len(encoded), 0)
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields) + encoded + payload
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, offset) + encoded
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(body), 0)
    return body + central + end


def stored(name, payload, flags=0, method=0):
    """A ``raw_zip`` entry holding ``payload`` uncompressed (unless ``method`` says otherwise)."""
    return (name, payload, method, flags, len(payload), zlib.crc32(payload))


def zeros_deflated(nbytes, unit=1 << 20):
    """A raw deflate stream of ``nbytes`` zero bytes (a multiple of ``unit``), about 1/1000 of
    that in size, built by repeating one fully flushed block (so nothing big is compressed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(unit)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (nbytes // unit) + compressor.flush()


def constant_checkpoint(shapes, meta_ops=None):
    """A well-formed zip checkpoint of any size in a few kB: tensor ``i`` of ``shapes`` holds the
    one value ``i + 1`` everywhere (a stride-0 view of element ``i`` of one float32 storage).

    Args:
        shapes: ``(key, shape)`` pairs, e.g. a reference fixture's ``shapes``.
        meta_ops: opcodes of an MMDetection ``meta`` entry, or None.
    Returns:
        ``(bytes, {key: value})``.
    """
    values = {key: float(i + 1) for i, (key, _) in enumerate(shapes)}
    entries = [
        (key, tensor(storage("0", len(values)), shape, (0,) * len(shape), offset=i))
        for i, (key, shape) in enumerate(shapes)
    ]
    raw = struct.pack(f"<{len(values)}f", *values.values())
    return torch_zip(checkpoint(dictionary(entries), meta_ops), {"0": raw}), values


# ----------------------------------------------------------------------------- the hostile files

GIB = 1 << 30
ONE_FLOAT = struct.pack("<f", 1.5)


def zip_with_one_tensor(size, stride, meta_ops=None, key="w"):
    """A zip checkpoint with one float tensor of ``size``/``stride`` on a one-element storage."""
    data = checkpoint(dictionary([(key, tensor(storage("0", 1), size, stride))]), meta_ops)
    return torch_zip(data, {"0": ONE_FLOAT})


def encrypted_entry():
    """A zip checkpoint whose data.pkl is flagged as encrypted."""
    data = checkpoint(dictionary([("w", tensor(storage("0", 1), (), ()))]))
    return raw_zip([stored("archive/data.pkl", data, flags=1), stored("archive/data/0", ONE_FLOAT)])


def unknown_compression():
    """A zip checkpoint whose storage entry names compression method 99."""
    data = checkpoint(dictionary([("w", tensor(storage("0", 1), (), ()))]))
    return raw_zip([stored("archive/data.pkl", data), stored("archive/data/0", ONE_FLOAT, method=99)])


def corrupt_deflate():
    """A zip checkpoint whose storage entry is a deflate stream of garbage."""
    data = checkpoint(dictionary([("w", tensor(storage("0", 4), (4,), (1,)))]))
    garbage = b"\xff" * 16
    return raw_zip([stored("archive/data.pkl", data), ("archive/data/0", garbage, 8, 0, 16, 0)])


def deflate_bomb(numel):
    """A ~3 MB zip checkpoint whose storage entry inflates to 3 GiB of zeros; the pickle's
    storage (and its one tensor) has ``numel`` float32 elements."""
    data = checkpoint(dictionary([("w", tensor(storage("0", numel), (numel,), (1,)))]))
    bomb = zeros_deflated(3 * GIB)
    return raw_zip([stored("archive/data.pkl", data), ("archive/data/0", bomb, 8, 0, 3 * GIB, 0)])


def big_bytearray():
    """``bytearray(2**33)`` in a 60-byte pickle (a 400-byte zip)."""
    return zipped(checkpoint(dictionary([("w", call(glob("builtins", "bytearray"), integer(2**33)))])))


def punycode(chars=240_000):
    """``_codecs.encode(s, "punycode")`` on ``chars`` non-ASCII characters (quadratic work)."""
    value = "".join(chr(0x100 + i % 5000) for i in range(chars))
    return zipped(checkpoint(dictionary([("w", call(glob("_codecs", "encode"), text(value), text("punycode")))])))


def shared_lists(levels=60):
    """``builtins.complex(L)`` (refused: a list) where ``L[i] = [L[i-1], L[i-1]]``: a repr of
    the arguments would be 2**levels long."""
    ops = b"]" + put(0)
    for i in range(1, levels + 1):
        ops += b"0](" + get(i - 1) + get(i - 1) + b"e" + put(i)  # POP the last level, build the next
    return zipped(checkpoint(dictionary([("w", glob("builtins", "complex") + b"(" + ops + b"tR")])))


def shared_dicts(levels=40):
    """A state dict ``D[levels]`` with ``D[i] = {"a": D[i-1], "b": D[i-1]}``: walked as a tree,
    2**levels key paths."""
    ops = b"}" + put(0)
    for i in range(1, levels + 1):
        ops += b"0}(" + text("a") + get(i - 1) + text("b") + get(i - 1) + b"u" + put(i)
    return zipped(checkpoint(ops))


def deep_lists(depth=10_000):
    """A ``meta`` entry of lists nested ``depth`` deep (two bytes a level)."""
    return zipped(checkpoint(dictionary([]), b"]" * depth + b"a" * (depth - 1)))


def many_copies(copies=2000, numel=1 << 18):
    """One 1 MiB storage under ``copies`` distinct tensors: 2 GB of copies from a 1.1 MB file."""
    # The first tensor memoises the function (2), the storage (1) and the geometry (3, 4) ...
    rebuild = glob("torch._utils", "_rebuild_tensor_v2") + put(2)
    geometry = tup(integer(numel)) + put(3), tup(integer(1)) + put(4)
    first = rebuild + tup(storage("0", numel) + put(1), integer(0), *geometry, b"\x89", b"N") + b"R"
    # ... which each later one reuses: 30 bytes a tensor.
    later = get(2) + tup(get(1), integer(0), get(3), get(4), b"\x89", b"N") + b"R"
    items = [(f"w{i}", first if i == 0 else later) for i in range(copies)]
    return torch_zip(checkpoint(dictionary(items)), {"0": bytes(4 * numel)})


def legacy_huge_storage():
    """A legacy-format file whose one storage claims 2**31 - 1 float64 elements (16 GiB)."""
    magic = pickled(integer(0x1950A86A20F9469CFC6C))
    version = pickled(integer(1001))
    info = pickled(b"}")
    numel = 2**31 - 1
    obj = checkpoint(dictionary([("w", tensor(storage("0", numel, "DoubleStorage", legacy=True), (1,), (1,)))]))
    keys = pickled(b"](" + text("0") + b"e")
    return magic + version + info + obj + keys + struct.pack("<q", numel)


def self_referencing_unresolved():
    """With ``allow_unknown_globals``: an unknown global's record ``T`` whose argument list holds
    ``T`` four times, then a refused call on ``T``: a recursive repr would be exponential."""
    empty = b"]" + put(0) + b"0"
    record = glob("evil", "Thing") + tup(get(0)) + b"R" + put(1) + b"0"
    fill = get(0) + b"(" + get(1) * 4 + b"e0"
    refused = call(glob("builtins", "complex"), get(1))
    return zipped(checkpoint(dictionary([("w", empty + record + fill + refused)])))
