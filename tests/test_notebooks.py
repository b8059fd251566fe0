"""Runs every notebook in notebooks/ top to bottom with a small configuration.

The first code cell of each notebook is tagged ``parameters`` and holds every
size knob as a plain assignment; the test replaces it with tiny sizes (64 px
images, a handful of images, one epoch) and a temporary work folder, runs the
notebook in a ``python3`` kernel (this interpreter's, checked), fails on any
cell error, and checks what the notebook produced.

Work folders: 01 and 02 share one, so 02 exports the model that 01 saved, as
when a user runs them in order (run alone, 02 trains its own); 03 gets a fresh
one, which covers the notebooks' "no model from 01: train one here" path.
"""

import ast
import importlib
import os
import re
import sys
from pathlib import Path

import pytest


def _require(name):
    """Imports a notebook dependency. Missing, it skips these tests on a developer's machine but
    fails them in CI (``CI`` set, as every CI service does): there the test extra installs it."""
    if os.environ.get("CI", "").strip().lower() in ("", "0", "false", "no"):
        return pytest.importorskip(name)
    return importlib.import_module(name)


nbformat = _require("nbformat")
nbclient = _require("nbclient")
_require("ipykernel")
_require("matplotlib")

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT = 300

# Small settings per notebook: every key must be a knob of the notebook's parameters cell.
SMALL = {
    "01_quickstart.ipynb": dict(
        NUM_TRAIN=16,
        NUM_VAL=4,
        IMAGE_SIZE=64,
        BATCH_SIZE=8,
        EPOCHS=1,
        WARMUP_STEPS=1,
        EVAL_EVERY=1,
        NUM_PICTURES=2,
    ),
    "02_deploy.ipynb": dict(
        NUM_TRAIN=16,
        NUM_VAL=4,
        IMAGE_SIZE=64,
        BATCH_SIZE=8,
        EPOCHS=1,
        NUM_CALIBRATION=2,
        NUM_SHOW=2,
        MAX_EVAL_IMAGES=None,
        # One export per runtime (TensorFlow, LiteRT with calibration, onnxruntime); tests/export covers the rest.
        FORMATS=["saved_model", "tflite_float32", "onnx"],
    ),
    "03_distributions.ipynb": dict(
        NUM_TRAIN=16,
        NUM_VAL=4,
        IMAGE_SIZE=64,
        BATCH_SIZE=8,
        EPOCHS=1,
        COMPARE_V1=False,
        MAX_IMAGES=None,
        # An untrained model's scores are below the default 0.05: analyse every detection.
        SCORE_THRESHOLD=0.0,
        NUM_SHOW=3,
    ),
}


def _parameters_cell(nb):
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code_cells, "the notebook has no code cell"
    first = code_cells[0]
    assert "parameters" in first.metadata.get("tags", []), "the first code cell must be tagged 'parameters'"
    return first


def _knobs(source):
    """The names and literal values assigned in a parameters cell."""
    knobs = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name), (
            f"the parameters cell must hold plain assignments only, got: {ast.unparse(node)}"
        )
        knobs[node.targets[0].id] = ast.literal_eval(node.value)
    return knobs


def _stream_text(cell):
    return "".join(out.get("text", "") for out in cell.get("outputs", []) if out.output_type == "stream")


def _num_pictures(cell):
    return sum(1 for out in cell.get("outputs", []) if "image/png" in out.get("data", {}))


def _cell(nb, marker):
    """The executed code cell whose source contains ``marker``."""
    matches = [cell for cell in nb.cells if cell.cell_type == "code" and marker in cell.source]
    assert len(matches) == 1, f"expected one cell containing {marker!r}, found {len(matches)}"
    return matches[0]


def test_every_notebook_has_a_small_configuration():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_is_stored_clean(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "store notebooks with outputs cleared"
    knobs = _knobs(_parameters_cell(nb).source)
    assert "WORK_DIR" in knobs


def _run(name, work_dir):
    """Executes notebook ``name`` with its small configuration in ``work_dir``; returns the executed notebook."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    params = _parameters_cell(nb)
    knobs = _knobs(params.source)
    unknown = set(SMALL[name]) - set(knobs)
    assert not unknown, f"{name} has no parameters {sorted(unknown)}"
    knobs.update(SMALL[name], WORK_DIR=str(work_dir))
    params.source = "\n".join(f"{key} = {value!r}" for key, value in knobs.items())
    # Proves the kernel runs this interpreter's environment (where keras_gfocal is installed).
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('KERNEL_PREFIX=' + sys.prefix)"))

    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(work_dir)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    prefix = re.search(r"KERNEL_PREFIX=(.*)", _stream_text(nb.cells[-1])).group(1).strip()
    assert os.path.realpath(prefix) == os.path.realpath(sys.prefix)
    return nb


def _check_01_quickstart(nb, work_dir):
    out = work_dir / "quickstart"
    assert (out / "model.keras").is_file() and (out / "predictions.png").is_file()
    assert "Average Precision" in _stream_text(_cell(nb, "coco_evaluate(val_set.coco, results)"))
    assert "reloaded predictions identical: True" in _stream_text(_cell(nb, "model.save(MODEL_PATH)"))
    assert _num_pictures(_cell(nb, "ax_loss.plot")) == 1  # the loss curves
    assert _num_pictures(_cell(nb, "image_grid(pictures")) == 1  # the predictions


def _check_02_deploy(nb, work_dir):
    formats = ["keras"] + _knobs(_parameters_cell(nb).source)["FORMATS"]
    table = _stream_text(_cell(nb, "COCO box mAP on"))
    for fmt in formats:
        row = rf"^{fmt} +-?\d\.\d{{3}} +-?\d\.\d{{3}} +-?\d\.\d{{3}} "  # name, AP, AP50, AP75
        assert re.search(row, table, re.M), f"no row for {fmt}:\n{table}"
    assert _num_pictures(_cell(nb, "len(show_images), len(detectors)")) == 1  # images x formats in one figure
    assert (work_dir / "deploy" / "formats.png").is_file()
    serving = _stream_text(_cell(nb, '"signature_name": "detect_bytes"'))
    assert "docker run -p 8501:8501" in serving
    assert '{"signature_name": "detect_bytes", "instances": [{"b64": ' in serving
    assert (work_dir / "deploy" / "request.json").is_file()
    answer = _stream_text(_cell(nb, 'signatures["detect_bytes"]'))
    assert '"predictions"' in answer and '"num_detections"' in answer


def _check_03_distributions(nb, work_dir):
    out = work_dir / "distributions"
    for file_name in ("quality_vs_iou.png", "distributions.png", "correlations.json"):
        assert (out / file_name).is_file()
    correlations = _stream_text(_cell(nb, 'print(json.dumps(report["pearson_iou"]'))
    assert "dgqp_quality" in correlations and "DGQP quality over the positives" in correlations
    assert _num_pictures(_cell(nb, 'report["files"]["quality_vs_iou"]')) == 1
    assert _num_pictures(_cell(nb, 'report["files"]["distributions"]')) == 1
    shapes = _stream_text(_cell(nb, "detections = model.predict(images"))
    assert re.search(r"'edge_confidence': \(\d+, 100, 4\)", shapes), shapes


CHECKS = {
    "01_quickstart.ipynb": _check_01_quickstart,
    "02_deploy.ipynb": _check_02_deploy,
    "03_distributions.ipynb": _check_03_distributions,
}


@pytest.fixture(scope="module")
def shared_work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks_01_02")


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, shared_work_dir, tmp_path):
    work_dir = shared_work_dir if name in ("01_quickstart.ipynb", "02_deploy.ipynb") else tmp_path
    nb = _run(name, work_dir)
    CHECKS[name](nb, work_dir)
