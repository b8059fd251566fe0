"""Runs the suite on several worker processes (pytest-xdist, settings in ``pytest.ini``).

Most of the suite's time is TensorFlow tracing train and export graphs, which
runs on one core; two workers keep two cores busy. Each test file runs whole
on one worker, so that its module fixtures are built once, and so do all the
files under ``tests/export/``, which share one trained model and its exports
(session fixtures in ``tests/export/conftest.py``).
"""

import os
import pathlib

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
SHARED_SESSION_FIXTURES = ("export",)


def pytest_xdist_auto_num_workers(config):
    # -n auto: one worker a core, at most four (each worker holds its own TensorFlow).
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def pytest_itemcollected(item):
    # Marked as each test is collected: pytest-xdist reads the marks in its own
    # pytest_collection_modifyitems, which runs before a conftest's.
    path = pathlib.Path(str(item.path)).resolve()
    relative = path.relative_to(TESTS) if path.is_relative_to(TESTS) else path
    group = relative.parts[0] if relative.parts[0] in SHARED_SESSION_FIXTURES else str(relative)
    item.add_marker(pytest.mark.xdist_group(group))
