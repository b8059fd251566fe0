"""Hostile ``.pth`` files: each refused with one ``CheckpointError`` line naming the file (or,
for a legitimate-but-huge stride-0 view, read as a view), in bounded time and memory.

The files are assembled in ``hostile_files.py`` from pickle opcodes and zip records. They are
read in one subprocess that imports only ``keras_gfocal/checkpoints/pth.py`` (by path: the
package would import TensorFlow), with its address space capped by ``RLIMIT_AS`` at
``HEADROOM`` beyond what it uses after importing NumPy, and with ``tracemalloc`` measuring each
load's peak. Before the fix these files took minutes, gigabytes, or escaped as tracebacks.
"""

import json
import os
import subprocess
import sys

import hostile_files as hostile
import pytest

PTH = os.path.join(os.path.dirname(__file__), "..", "..", "keras_gfocal", "checkpoints", "pth.py")
HEADROOM = 400 << 20  # the address space the reader may add (RLIMIT_AS)
PEAK = 200 << 20  # the most a load may allocate (tracemalloc, NumPy's buffers included)
SECONDS = 5.0  # the longest a load may take

WORKER = r"""
import importlib.util, json, resource, sys, time, tracemalloc
import numpy as np

spec = importlib.util.spec_from_file_location("pth_under_test", sys.argv[1])
pth = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pth)
assert not any(m.startswith(("tensorflow", "keras")) for m in sys.modules), "the reader imports TensorFlow"
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
limit = vm + int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
results = {}
for path in sys.argv[3:]:
    tracemalloc.start()
    start = time.perf_counter()
    try:
        state, meta = pth.read_state_dict(path, allow_unknown_globals=path.endswith(".allow.pth"))
        outcome = {"error": None, "arrays": {
            k: [list(v.shape), bool(v.flags.writeable), float(v.reshape(-1)[:1].sum())] for k, v in state.items()
        }}
    except Exception as error:
        outcome = {"error": type(error).__name__, "message": str(error),
                   "subclass_of_checkpoint_error": isinstance(error, pth.CheckpointError)}
    outcome["seconds"] = time.perf_counter() - start
    outcome["peak"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    state = meta = None
    results[path] = outcome
print(json.dumps(results))
"""

# name -> (builder, a fragment the one-line message must hold)
REFUSED = {
    "encrypted_entry": (hostile.encrypted_entry, "is encrypted"),
    "unknown_compression": (hostile.unknown_compression, "compression method 99"),
    "corrupt_deflate": (hostile.corrupt_deflate, "truncated or corrupt checkpoint (error: Error -3"),
    "deflate_bomb_claimed_3gib": (lambda: hostile.deflate_bomb(3 * hostile.GIB // 4), "past the limit"),
    "bytearray_8gib": (hostile.big_bytearray, "bytearray from anything but bytes"),
    "punycode_240k": (hostile.punycode, "codec 'punycode' (torch writes only latin1)"),
    "shared_lists_repr": (hostile.shared_lists, "builtins.complex(["),
    "shared_dicts_flatten": (hostile.shared_dicts, "is a dict met before (shared or cyclic)"),
    "deep_lists": (hostile.deep_lists, "containers nested more than 64 deep"),
    "many_copies": (hostile.many_copies, "past the limit"),
    "legacy_16gib_storage": (hostile.legacy_huge_storage, "needs 17,179,869,176 bytes; the file has"),
    # Read with allow_unknown_globals=True (the name ends in .allow).
    "unresolved_self_repr.allow": (
        hostile.self_referencing_unresolved,
        "builtins.complex(<unresolved evil.Thing, 1 argument(s)>,)",
    ),
}
STRIDE0 = 402_653_184  # float32 elements: 1.5 GiB if expanded
READ = {
    "stride0_1p5gib": (lambda: hostile.zip_with_one_tensor((STRIDE0,), (0,)), {"w": [[STRIDE0], False, 1.5]}),
    "deflate_bomb_one_float": (lambda: hostile.deflate_bomb(1), {"w": [[1], True, 0.0]}),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for name, (build, _) in {**REFUSED, **READ}.items():
        paths[name] = str(folder / f"{name}.pth")
        with open(paths[name], "wb") as handle:
            handle.write(build())
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER, PTH, str(HEADROOM), *paths.values()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    return {name: (paths[name], results[paths[name]]) for name in paths}


def test_the_files_are_small():
    sizes = {name: len(build()) for name, (build, _) in {**REFUSED, **READ}.items()}
    assert sizes["bytearray_8gib"] < 1000 and sizes["shared_dicts_flatten"] < 2000
    assert sizes["shared_lists_repr"] < 2000 and sizes["stride0_1p5gib"] < 1000
    assert max(sizes.values()) < 4 << 20


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_hostile_file_is_refused_in_one_line_quickly_and_in_little_memory(outcomes, name):
    path, outcome = outcomes[name]
    assert outcome["error"] in ("CheckpointError", "UnsafeCheckpointError") and outcome["subclass_of_checkpoint_error"]
    message = outcome["message"]
    assert message.startswith(path + ": ") and "\n" not in message and len(message) < 1000, message
    assert REFUSED[name][1] in message, message
    assert outcome["seconds"] < SECONDS, outcome["seconds"]
    assert outcome["peak"] < PEAK, outcome["peak"]


@pytest.mark.parametrize("name", sorted(READ))
def test_a_huge_view_or_an_oversized_entry_reads_as_much_as_the_tensor_needs(outcomes, name):
    _, outcome = outcomes[name]
    assert outcome["error"] is None, outcome.get("message")
    # The stride-0 tensor is a read-only view of its one-element storage, never expanded.
    assert outcome["arrays"] == READ[name][1]
    assert outcome["seconds"] < SECONDS and outcome["peak"] < 16 << 20, outcome
