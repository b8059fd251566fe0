"""The torch-free ``.pth`` reader: both torch.save formats, exact tensors, and refusal of code.

``tests/fixtures/pth/state_{zip,legacy}.pth`` were written by real ``torch.save`` and
``state_expected.npz`` holds what torch itself reads back from them (see
``tests/fixtures/make_reference_fixtures.py``). Other files are assembled here, byte by byte,
from the pickle opcodes torch writes, so that edge cases (byte order, bad geometry, malicious
globals) need no torch either.
"""

import io
import os
import pickle
import zipfile

import hostile_files as pickle_ops
import numpy as np
import pytest

from keras_gfocal.checkpoints import CheckpointError, UnsafeCheckpointError, load_pth, read_state_dict
from keras_gfocal.checkpoints.pth import UnresolvedObject

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "pth")
ZIP = os.path.join(FIXTURES, "state_zip.pth")
LEGACY = os.path.join(FIXTURES, "state_legacy.pth")
FORMATS = pytest.mark.parametrize("path", [ZIP, LEGACY], ids=["zip", "legacy"])


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURES, "state_expected.npz")) as data:
        return {name: data[name] for name in data.files}


# ----------------------------------------------------------------------------- a pickle assembler
def _tensor(key, storage_class, numel, offset, size, stride):
    """The opcodes torch.save writes for one tensor (``_rebuild_tensor_v2`` on a storage)."""
    return pickle_ops.tensor(pickle_ops.storage(key, numel, storage_class), size, stride, offset)


def _zip_checkpoint(path, data_pkl, storages, byteorder="little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return str(path)


WEIGHT = np.arange(6, dtype=np.float32).reshape(2, 3) / 4 - 0.5
COUNT = np.array(41, np.int64)


def _small_state(name="conv.weight"):
    return [
        (name, _tensor("0", "FloatStorage", 6, 0, (2, 3), (3, 1))),
        ("bn.num_batches_tracked", _tensor("1", "LongStorage", 1, 0, (), ())),
    ]


def _small_storages(order="<"):
    return {"0": WEIGHT.astype(order + "f4").tobytes(), "1": COUNT.astype(order + "i8").tobytes()}


# ----------------------------------------------------------------------------- real torch files
def test_the_two_fixtures_really_are_the_two_formats():
    assert zipfile.is_zipfile(ZIP)
    assert not zipfile.is_zipfile(LEGACY)
    with open(LEGACY, "rb") as handle:
        assert pickle.load(handle) == 0x1950A86A20F9469CFC6C  # torch's legacy magic number


@FORMATS
def test_every_tensor_matches_torch_exactly(path, expected):
    checkpoint = load_pth(path)
    state = checkpoint["state_dict"]
    assert list(state) == list(expected)
    for name, want in expected.items():
        got = state[name]
        assert isinstance(got, np.ndarray), name
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


@FORMATS
def test_containers_and_metadata_are_kept(path):
    checkpoint = load_pth(path)
    assert checkpoint["meta"] == {"epoch": 12, "CLASSES": ("cat", "dog")}
    assert isinstance(checkpoint["meta"]["CLASSES"], tuple)
    state = checkpoint["state_dict"]
    assert type(state).__name__ == "OrderedDict"
    assert state._metadata == {"": {"version": 1}, "bn": {"version": 2}}


@FORMATS
def test_dtypes_include_half_bfloat16_bool_and_integers(path):
    state = load_pth(path)["state_dict"]
    assert state["half"].dtype == np.float16
    assert state["bf16"].dtype == np.float32  # bfloat16 widened exactly
    assert state["mask"].dtype == np.bool_
    np.testing.assert_array_equal(state["mask"], [[True, False, True], [False, False, True]])
    assert state["bn.num_batches_tracked"].dtype == np.int64
    assert state["bn.num_batches_tracked"].shape == ()
    assert int(state["bn.num_batches_tracked"]) == 1234567890123
    np.testing.assert_array_equal(state["int32"], np.array([-7, 0, 2**31 - 1], np.int32))
    np.testing.assert_array_equal(state["uint8"], np.array([0, 17, 255], np.uint8))
    np.testing.assert_array_equal(state["int8"], np.array([-128, -1, 127], np.int8))
    # bfloat16 keeps 8 significant bits: every value is a float32 whose low 16 bits are zero.
    assert not np.any(state["bf16"].view(np.uint32) & 0xFFFF)


@FORMATS
def test_views_honour_offset_and_stride(path):
    state = load_pth(path)["state_dict"]
    base = np.arange(12, dtype=np.float32) * 0.5 - 1.0
    np.testing.assert_array_equal(state["slice_a"], base[1:4])  # storage offset 1
    np.testing.assert_array_equal(state["slice_b"], base[6:12].reshape(2, 3))  # offset 6
    transposed = state["transposed"]  # a [3, 4] matrix seen through stride (1, 4)
    assert transposed.shape == (4, 3)
    assert transposed.flags.c_contiguous
    assert not np.array_equal(transposed, transposed.T.reshape(4, 3))
    # Arrays viewing one storage are independent copies.
    state["slice_a"][:] = 99.0
    np.testing.assert_array_equal(state["slice_b"], base[6:12].reshape(2, 3))


@FORMATS
def test_read_state_dict_unwraps_an_mmdetection_checkpoint(path, expected):
    state, meta = read_state_dict(path)
    assert type(state) is dict
    assert list(state) == list(expected)
    np.testing.assert_array_equal(state["conv.weight"], expected["conv.weight"])
    assert meta == {"epoch": 12, "CLASSES": ("cat", "dog")}


def test_a_file_object_reads_like_a_path(expected):
    with open(ZIP, "rb") as handle:
        state, _ = read_state_dict(io.BytesIO(handle.read()))
    np.testing.assert_array_equal(state["transposed"], expected["transposed"])


# ----------------------------------------------------------------------------- assembled files
def test_assembled_zip_checkpoint_reads(tmp_path):
    path = _zip_checkpoint(
        tmp_path / "a.pth", pickle_ops.pickled(pickle_ops.dictionary(_small_state())), _small_storages()
    )
    state = load_pth(path)
    np.testing.assert_array_equal(state["conv.weight"], WEIGHT)
    assert state["bn.num_batches_tracked"] == 41


def test_big_endian_storages_are_byte_swapped(tmp_path):
    path = _zip_checkpoint(
        tmp_path / "big.pth",
        pickle_ops.pickled(pickle_ops.dictionary(_small_state())),
        _small_storages(">"),
        byteorder="big",
    )
    state = load_pth(path)
    np.testing.assert_array_equal(state["conv.weight"], WEIGHT)
    assert state["conv.weight"].dtype == np.float32
    assert state["bn.num_batches_tracked"] == 41


def test_rebuild_tensor_v3_reinterprets_an_untyped_storage(tmp_path):
    values = np.array([1, 2, 65535], np.uint16)
    storage = (
        b"(" + pickle_ops.text("storage") + pickle_ops.glob("torch.storage", "UntypedStorage") + pickle_ops.text("0")
    )
    storage += pickle_ops.text("cpu") + pickle_ops.integer(values.nbytes) + b"tQ"
    hooks = pickle_ops.glob("collections", "OrderedDict") + b")R"
    tensor = (
        pickle_ops.glob("torch._utils", "_rebuild_tensor_v3")
        + b"("
        + storage
        + pickle_ops.integer(0)
        + pickle_ops.tup(pickle_ops.integer(3))
    )
    tensor += pickle_ops.tup(pickle_ops.integer(1)) + b"\x89" + hooks + pickle_ops.glob("torch", "uint16") + b"tR"
    path = _zip_checkpoint(
        tmp_path / "v3.pth", pickle_ops.pickled(pickle_ops.dictionary([("u16", tensor)])), {"0": values.tobytes()}
    )
    got = load_pth(path)["u16"]
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, values)


def test_read_state_dict_accepts_bare_and_model_checkpoints(tmp_path):
    bare = _zip_checkpoint(
        tmp_path / "bare.pth", pickle_ops.pickled(pickle_ops.dictionary(_small_state())), _small_storages()
    )
    state, meta = read_state_dict(bare)
    assert list(state) == ["conv.weight", "bn.num_batches_tracked"] and meta is None
    np.testing.assert_array_equal(state["conv.weight"], WEIGHT)

    wrapped = pickle_ops.pickled(
        pickle_ops.dictionary(
            [("model", pickle_ops.dictionary(_small_state("head.weight"))), ("epoch", pickle_ops.integer(3))]
        )
    )
    state, meta = read_state_dict(_zip_checkpoint(tmp_path / "model.pth", wrapped, _small_storages()))
    assert list(state) == ["head.weight", "bn.num_batches_tracked"] and meta is None
    np.testing.assert_array_equal(state["head.weight"], WEIGHT)


def test_read_state_dict_rejects_a_non_tensor_entry(tmp_path):
    body = pickle_ops.pickled(
        pickle_ops.dictionary(
            [("state_dict", pickle_ops.dictionary(_small_state() + [("note", pickle_ops.text("x"))]))]
        )
    )
    path = _zip_checkpoint(tmp_path / "note.pth", body, _small_storages())
    with pytest.raises(CheckpointError, match="'note'.*not a tensor"):
        read_state_dict(path)


def test_a_view_past_the_end_of_its_storage_is_refused(tmp_path):
    state = [("w", _tensor("0", "FloatStorage", 6, 1, (2, 3), (3, 1)))]  # needs 7 elements
    path = _zip_checkpoint(
        tmp_path / "oob.pth", pickle_ops.pickled(pickle_ops.dictionary(state)), {"0": WEIGHT.tobytes()}
    )
    with pytest.raises(CheckpointError, match="past the end") as error:
        load_pth(path)
    assert path in str(error.value)


def test_a_storage_shorter_than_declared_is_refused(tmp_path):
    path = _zip_checkpoint(
        tmp_path / "short.pth",
        pickle_ops.pickled(pickle_ops.dictionary(_small_state())),
        {"0": WEIGHT.tobytes()[:20], "1": COUNT.tobytes()},
    )
    with pytest.raises(CheckpointError, match="20 bytes"):
        load_pth(path)


# ----------------------------------------------------------------------------- malicious files
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def payload(tmp_path):
    """A pickle that runs ``touch <marker>`` when loaded by the standard unpickler."""
    marker = tmp_path / "pwned"
    data = pickle.dumps({"state_dict": {"w": _Payload(marker)}}, protocol=2)
    pickle.loads(data)  # the payload is real: the standard unpickler runs it ...
    assert marker.exists()
    marker.unlink()  # ... and the tests below check that the reader does not
    return data, marker


def _assert_refused(path, marker):
    with pytest.raises(UnsafeCheckpointError) as error:
        load_pth(path)
    message = str(error.value)
    assert "os.system" in message
    assert "not a plain checkpoint" in message
    assert str(path) in message
    assert error.value.global_name in ("posix.system", "nt.system", "os.system")
    assert isinstance(error.value, ValueError)
    assert not marker.exists()


def test_a_malicious_bare_pickle_is_refused_without_running(tmp_path, payload):
    data, marker = payload
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    _assert_refused(path, marker)


def test_a_malicious_zip_data_pkl_is_refused_without_running(tmp_path, payload):
    data, marker = payload
    path = _zip_checkpoint(tmp_path / "evil_zip.pth", data, {})
    _assert_refused(path, marker)


def test_a_malicious_main_pickle_after_a_valid_legacy_header_is_refused(tmp_path, payload):
    data, marker = payload
    header = b"".join(
        pickle.dumps(v, protocol=2)
        for v in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(header + data + pickle.dumps([], protocol=2))
    _assert_refused(path, marker)


def test_a_hand_written_os_system_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    body = pickle_ops.glob("os", "system") + b"(" + pickle_ops.text(f"touch {marker}") + b"tR"
    path = _zip_checkpoint(
        tmp_path / "os.pth",
        pickle_ops.pickled(pickle_ops.dictionary(_small_state() + [("x", body)])),
        _small_storages(),
    )
    with pytest.raises(UnsafeCheckpointError, match=r"os\.system") as error:
        load_pth(path)
    assert error.value.global_name == "os.system"
    assert not marker.exists()


def test_unknown_globals_can_be_kept_as_inert_records(tmp_path, payload):
    data, marker = payload
    path = tmp_path / "evil.pth"
    path.write_bytes(data)
    # Not a torch file (no magic number) even when the global is tolerated; still nothing runs.
    with pytest.raises(CheckpointError, match="magic"):
        load_pth(path, allow_unknown_globals=True)
    zipped = _zip_checkpoint(tmp_path / "evil_zip.pth", data, {})
    loaded = load_pth(zipped, allow_unknown_globals=True)
    record = loaded["state_dict"]["w"]
    assert isinstance(record, UnresolvedObject)
    assert record.global_name in ("posix.system", "nt.system")
    assert record.args == (f"touch {marker}",)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="not a tensor"):
        read_state_dict(zipped, allow_unknown_globals=True)


# ----------------------------------------------------------------------------- broken files
def test_a_missing_file_names_its_path(tmp_path):
    path = str(tmp_path / "nowhere.pth")
    with pytest.raises(FileNotFoundError) as error:
        load_pth(path)
    assert path in str(error.value)


@FORMATS
@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.97])
def test_a_truncated_file_names_its_path(tmp_path, path, fraction):
    data = open(path, "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError) as error:
        load_pth(cut)
    assert str(cut) in str(error.value)
    assert "truncated" in str(error.value) or "corrupt" in str(error.value)


def test_a_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("model weights live elsewhere\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as error:
        load_pth(path)
    assert str(path) in str(error.value)


def test_a_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(CheckpointError, match="magic number") as error:
        read_state_dict(path)
    assert str(path) in str(error.value)


def test_a_zip_without_data_pkl_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="data.pkl") as error:
        load_pth(path)
    assert str(path) in str(error.value)
