"""Mutation score of the numeric core (not CI: minutes per module on two cores).

Usage, from the repository root::

    .venv/bin/python benchmarks/mutation_score.py            # every module below
    .venv/bin/python benchmarks/mutation_score.py boxes losses

It installs mutmut (pinned below) into the running interpreter's environment if it is missing,
copies the working tree (tracked and untracked-but-not-ignored files) into a temporary folder,
and runs mutmut there once per module with only that module's own fast test file(s), so the
repository gets no ``mutants/`` folder, cache or ``setup.cfg``. It prints, per module, the mutants
killed / total and the name of every survivor; ``--keep`` leaves the temporary folders (to read a
survivor's diff with ``mutmut show NAME`` inside them).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MUTMUT = "mutmut==3.8.1"
ROOT = Path(__file__).resolve().parents[1]

# module (under keras_gfocal/) -> the fast test files that exercise it
MODULES = {
    "boxes": ["tests/test_boxes.py"],
    "losses": ["tests/test_losses.py"],
    "assigners": ["tests/test_assigners.py"],
    "postprocess": ["tests/test_postprocess.py"],
    # The detector test of test_detection_loss.py builds and fits a model (seconds per mutant): left out.
    "detection_loss": [
        "tests/test_detection_loss_values.py",
        "tests/test_detection_loss.py",
        "tests/test_detection_loss_clip.py",
        "--deselect",
        "tests/test_detection_loss.py::test_detector_compute_loss_is_the_objective_and_fit_takes_image_size",
    ],
    "distributions": ["tests/test_distributions.py"],
    "export/numpy_postprocess": ["tests/test_numpy_postprocess.py"],
    "optimizers": ["tests/test_optimizers.py"],
    "layers/batch_norm_folding": ["tests/layers/test_batch_norm_folding.py"],
}


def _ensure_mutmut() -> Path:
    exe = Path(sys.executable).with_name("mutmut")
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", MUTMUT], check=True)
    return exe


def _copy_tree(dst: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = ROOT / name
        if not src.is_file():
            continue
        target = dst / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def run_module(module: str, tests: list[str], exe: Path, keep: bool, children: int) -> tuple[int, int, list[str]]:
    work = Path(tempfile.mkdtemp(prefix=f"mutmut_{module.replace('/', '_')}_"))
    try:
        _copy_tree(work)
        (work / "setup.cfg").write_text(
            "[mutmut]\n"
            "source_paths=keras_gfocal\n"
            f"only_mutate=keras_gfocal/{module}.py\n"
            "pytest_add_cli_args_test_selection=\n"
            + "".join(f"    {t}\n" for t in tests)
            # -n 0: in one process (pytest.ini asks pytest-xdist for a worker a core).
            + "pytest_add_cli_args=\n    -p\n    no:cacheprovider\n    -n\n    0\n"
            # Fork each mutant from a server that has only imported the tests: forked from mutmut's
            # main process, which has run TensorFlow ops, a worker can deadlock in TF's thread pools.
            + "process_isolation=forkserver\n"
        )
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([str(exe), "run", "--max-children", str(children)], cwd=work, env=env, stdout=subprocess.DEVNULL)
        out = subprocess.run(
            [str(exe), "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True
        ).stdout
        status = {}
        for line in out.splitlines():
            m = re.match(r"\s*(\S+): (.+)$", line)
            if m:
                status[m.group(1)] = m.group(2).strip()
        total = len(status)
        killed = sum(1 for s in status.values() if s == "killed")
        survivors = sorted(k for k, s in status.items() if s != "killed")
        if keep:
            print(f"  (kept {work})")
        return killed, total, [f"{k} [{status[k]}]" for k in survivors]
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(MODULES), help=f"any of {list(MODULES)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary mutmut folders")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    exe = _ensure_mutmut()
    rows = []
    for module in args.modules:
        killed, total, survivors = run_module(module, MODULES[module], exe, args.keep, args.children)
        rows.append((module, killed, total))
        print(f"{module}: {killed}/{total} killed", flush=True)
        for s in survivors:
            print(f"  survivor {s}", flush=True)
    print("\n| module | killed / total |\n| --- | --- |")
    for module, killed, total in rows:
        print(f"| `{module}.py` | {killed} / {total} ({100.0 * killed / max(total, 1):.0f} %) |")


if __name__ == "__main__":
    main()
