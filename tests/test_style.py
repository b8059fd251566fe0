"""The repository's style, checked by ``pytest`` (and so by ``.ci/run``).

ruff formats and lints by ``ruff.toml``; docstrings use one dialect, reST's
double backticks for code (``like_this``), which ruff cannot see.
"""

import ast
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("keras_gfocal", "tests", "benchmarks")

#: Backtick spans read left to right: a reST role (``:func:`name```), a reST literal,
#: or a Markdown code span (group ``markdown``), the one this dialect refuses.
BACKTICK_SPANS = re.compile(r":\w+:`[^`\n]+`|``[^\n]*?``|(?P<markdown>`[^`\n]+`)")


def _ruff():
    found = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
    result = subprocess.run([_ruff(), *command, "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def markdown_code_in_docstrings(source):
    """``(line, text)`` of each single-backtick span inside a docstring of ``source``."""
    tree = ast.parse(source)
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            for number in range(first.lineno, first.end_lineno + 1):
                found += [(number, m["markdown"]) for m in BACKTICK_SPANS.finditer(lines[number - 1]) if m["markdown"]]
    return found


def test_markdown_code_finder_on_examples():
    source = (
        '"""Module: ``ok``, `bad`."""\n\n'
        "def f():\n"
        '    """Returns ``x`` and `y`\n'
        '    over `two` lines."""\n'
        '    s = "`not a docstring`"\n'
        "class C:\n"
        '    """See :func:`g` and `h`, ``a`` `b`."""\n'
    )
    assert markdown_code_in_docstrings(source) == [(1, "`bad`"), (4, "`y`"), (5, "`two`"), (8, "`h`"), (8, "`b`")]


def test_docstrings_use_double_backticks():
    paths = [ROOT / "setup.py"] + [p for folder in SOURCE_FOLDERS for p in sorted((ROOT / folder).glob("**/*.py"))]
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in paths
        for line, text in markdown_code_in_docstrings(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "write code in docstrings as ``code``:\n" + "\n".join(offenders)
