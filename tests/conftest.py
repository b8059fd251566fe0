"""Runs the suite on several worker processes (pytest-xdist, settings in ``pytest.ini``).

Most of the suite's time is TensorFlow tracing train and export graphs, which
runs on one core; two workers keep two cores busy. Each test file runs whole
on one worker, so that its module fixtures are built once, except the tests
that use the one trained model and its exports (session fixtures in
``tests/export/conftest.py``): those run together on one worker, first,
because they are the longest piece of work.
"""

import os
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
SHARED_MODEL_FIXTURES = {"export_root", "synthetic", "trained", "exports"}
SHARED_MODEL_GROUP = "shared-trained-model"


def pytest_xdist_auto_num_workers(config):
    # -n auto: one worker a core, at most four (each worker holds its own TensorFlow).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


def _group(item):
    path = pathlib.Path(str(item.path)).resolve()
    uses_shared_model = SHARED_MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))
    if uses_shared_model and path.is_relative_to(TESTS / "export"):
        return SHARED_MODEL_GROUP
    return str(path.relative_to(TESTS)) if path.is_relative_to(TESTS) else str(path)


def pytest_itemcollected(item):
    # Marked as each test is collected: pytest-xdist reads the marks in its own
    # pytest_collection_modifyitems, which runs before a conftest's.
    item.add_marker(pytest.mark.xdist_group(_group(item)))


def pytest_collection_modifyitems(config, items):
    # The shared-model tests first (a stable sort: each group keeps its order).
    items.sort(key=lambda item: item.get_closest_marker("xdist_group").args[0] != SHARED_MODEL_GROUP)
