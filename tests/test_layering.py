"""The package's layering (README, "Layout"): a module imports only from its
own layer or the layers below it, never from one above.

Every ``import`` counts, at the top of a file or inside a function: a lazy
import is an arrow all the same.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_gfocal"

#: Bottom first. A module belongs to the layer of the longest prefix that names it.
LAYERS = (
    (
        "foundations",
        (
            "keras_gfocal.constants",
            "keras_gfocal.image",
            "keras_gfocal.boxes",
            "keras_gfocal.schedules",
            "keras_gfocal.optimizers",
            "keras_gfocal.visualize",
            "keras_gfocal.checkpoints",
            "keras_gfocal.distributions",
        ),
    ),
    (
        "parts",
        (
            "keras_gfocal.data",
            "keras_gfocal.layers",
            "keras_gfocal.losses",
            "keras_gfocal.assigners",
            "keras_gfocal.postprocess",
        ),
    ),
    ("pretrained backbones", ("keras_gfocal.pretrained",)),
    ("model", ("keras_gfocal", "keras_gfocal.detection_loss", "keras_gfocal.presets", "keras_gfocal.detector")),
    ("converters", ("keras_gfocal.convert",)),
    ("running a model", ("keras_gfocal.evaluation", "keras_gfocal.export", "keras_gfocal.prediction")),
    ("training and analysis", ("keras_gfocal.training", "keras_gfocal.analysis")),
    ("command line", ("keras_gfocal.cli",)),
)


def layer_of(module):
    """``(index, name)`` of the layer holding a dotted module name."""
    best = None
    for index, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), index, name)
    if best is None:
        raise KeyError(module)
    return best[1], best[2]


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(path, source=None):
    """``(line, imported module)`` for each import of a ``keras_gfocal`` module in one file.

    ``from keras_gfocal.x import y`` counts as importing ``keras_gfocal.x.y``
    where ``y`` is a module, else ``keras_gfocal.x``.
    """
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    this = module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = this if is_package else this[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                found.append((node.lineno, candidate if is_module else module))
    return [(line, name) for line, name in found if name == "keras_gfocal" or name.startswith("keras_gfocal.")]


def upward_imports(path, source=None):
    """Messages naming each import of ``path`` that reaches a layer above its own."""
    module = module_name(path)
    own, own_name = layer_of(module)
    messages = []
    for line, imported in package_imports(path, source):
        index, name = layer_of(imported)
        if index > own:
            messages.append(
                f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {own_name!r}) imports {imported} "
                f"(layer {name!r}, above it)"
            )
    return messages


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = []
    for path in SOURCES:
        try:
            layer_of(module_name(path))
        except KeyError:
            missing.append(module_name(path))
    assert not missing, f"modules in no layer of tests/test_layering.py LAYERS (and the README's Layout): {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_layer_above_its_own(path):
    messages = upward_imports(path)
    assert not messages, "\n".join(messages)


def test_the_check_catches_the_model_importing_training():
    # The arrow issue 12 removed: the model registered its optimiser's schedule
    # by importing keras_gfocal.training, a layer above it.
    detector = PACKAGE / "detector.py"
    source = detector.read_text(encoding="utf-8") + (
        "\n\ndef _restore():\n    from keras_gfocal.training import schedules  # noqa: F401\n"
    )
    messages = upward_imports(detector, source)
    assert len(messages) == 1
    assert "keras_gfocal.detector (layer 'model') imports keras_gfocal.training (layer" in messages[0]
    assert messages[0].startswith("keras_gfocal/detector.py:")


def test_the_check_catches_export_importing_the_training_loop():
    runtime = PACKAGE / "export" / "runtime.py"
    source = "from keras_gfocal.training.loop import train\n" + runtime.read_text(encoding="utf-8")
    assert upward_imports(runtime, source) == [
        "keras_gfocal/export/runtime.py:1: keras_gfocal.export.runtime (layer 'running a model') imports "
        "keras_gfocal.training.loop (layer 'training and analysis', above it)"
    ]


def test_the_check_catches_a_backbone_importing_its_converter():
    # The arrow issue 19 removed: ResNetBackbone.load_pretrained imported its torchvision converter.
    resnet = PACKAGE / "layers" / "resnet.py"
    source = resnet.read_text(encoding="utf-8") + (
        "\n\ndef _load(backbone):\n    from keras_gfocal.pretrained import torchvision  # noqa: F401\n"
    )
    last_line = len(source.splitlines())
    assert upward_imports(resnet, source) == [
        f"keras_gfocal/layers/resnet.py:{last_line}: keras_gfocal.layers.resnet (layer 'parts') imports "
        "keras_gfocal.pretrained.torchvision (layer 'pretrained backbones', above it)"
    ]


def test_checkpoints_at_the_bottom_import_only_themselves():
    # The .pth reader and the generic rows -> variables helpers know no model: every map lives above.
    for path in sorted((PACKAGE / "checkpoints").rglob("*.py")):
        assert all(name.startswith("keras_gfocal.checkpoints") for _, name in package_imports(path)), path
