"""gptlib's modules depend on each other in one direction only, with no import cycle.

The graph is read from the source with `ast`, so it counts every import: at module level, inside
functions (deferred) and under `TYPE_CHECKING`. A deferred import still couples two modules; the
book's rule (STYLE.md, DESIGN.md) is that the layering holds for all of them:

    _version, files, device, tokenizer, bpe, corpus, data, ngram, kv_cache, tasks   (foundations)
    -> model, distributed
    -> generate, checkpoint, pretrained, positions, ablations, lora, finetune, embed, quantize,
       preference, runs
    -> train
    -> exercises, explorers, the command line (__main__) and the package's re-exports (__init__)
"""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptlib"
LAYERS = [
    {
        "_version",
        "files",
        "device",
        "tokenizer",
        "bpe",
        "corpus",
        "data",
        "ngram",
        "kv_cache",
        "tasks",
    },
    {"model", "distributed"},
    {
        "generate",
        "checkpoint",
        "pretrained",
        "positions",
        "ablations",
        "lora",
        "finetune",
        "embed",
        "quantize",
        "preference",
        "runs",
    },
    {"train"},
    {"exercises", "explorers", "__main__", "__init__"},
]


def module_name(path: Path) -> str:
    """gptlib/model.py -> "model"; gptlib/exercises/core.py -> "exercises.core"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]  # a subpackage is named after its folder
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(dotted: str) -> str:
    """The longest module of gptlib that ``dotted`` (relative to gptlib) names."""
    parts = dotted.split(".") if dotted else []
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return "__init__"


def imports_of(name: str) -> set[str]:
    """Every gptlib module that module ``name`` imports, wherever the import statement sits."""
    package = name.split(".")[:-1] if not MODULES[name].name == "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {
                resolve(a.name[len("gptlib.") :])
                for a in node.names
                if a.name.startswith("gptlib.")
            }
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .core import y
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif node.module == "gptlib" or (node.module or "").startswith("gptlib."):
                module = node.module[len("gptlib.") :] if node.module != "gptlib" else ""
            else:
                continue
            for alias in node.names:
                inner = f"{module}.{alias.name}" if module else alias.name
                found.add(resolve(inner) if inner in MODULES else resolve(module))
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    top = name.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer or name in layer)


def test_every_module_has_a_layer():
    assert all(isinstance(layer_of(name), int) for name in MODULES)


def test_the_import_graph_has_no_cycle():
    try:
        order = list(TopologicalSorter(GRAPH).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle in gptlib: {' -> '.join(e.args[1])}")
    assert order.index("model") < order.index("train") < order.index("__main__")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    """A module imports only modules of its own layer or of layers below it."""
    upward = sorted(t for t in GRAPH[name] if layer_of(t) > layer_of(name))
    assert not upward, f"gptlib.{name} imports {upward}, which sit above it"


def test_the_graph_reader_sees_known_edges():
    """The reader must find real imports, or the tests above would pass on an empty graph."""
    assert "tokenizer" in GRAPH["bpe"]
    assert {"data", "device", "distributed", "model", "runs"} <= GRAPH["train"]
    assert {"checkpoint", "data", "device", "distributed", "model"} <= GRAPH["runs"]
    assert "model" in GRAPH["checkpoint"]
    assert "train" in GRAPH["__main__"]  # deferred imports inside functions count too
    assert "kv_cache" in GRAPH["model"]  # and so do TYPE_CHECKING imports


def test_nothing_imports_the_command_line():
    assert not [name for name, targets in GRAPH.items() if "__main__" in targets]


def test_the_appendix_draws_the_graph_it_computed():
    """Page 9.4 prints the import graph as Mermaid lines and draws it in a Markdown cell. The
    drawing is text in the notebook, so it could go stale; it must hold exactly the edges of the
    printed output (which strict nbval proves is what the page computes from today's source)."""
    import json

    page = PACKAGE.parent / "chapters" / "09-appendix" / "04-library-structure.ipynb"
    cells = json.loads(page.read_text(encoding="utf-8"))["cells"]
    printed = drawn = None
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and 'print("flowchart TD")' in source:
            texts = [o["text"] for o in cell["outputs"] if "text" in o]
            printed = "".join("".join(t) if isinstance(t, list) else t for t in texts)
        if cell["cell_type"] == "markdown" and "```mermaid" in source:
            drawn = source.split("```mermaid", 1)[1].split("```", 1)[0]
    assert printed and drawn, "page 9.4 lost its graph cell or its Mermaid drawing"

    def arrows(text):
        return {line.strip() for line in text.splitlines() if "->" in line or "==>" in line}

    assert arrows(printed), "the printed graph has no edges"
    missing, extra = arrows(printed) - arrows(drawn), arrows(drawn) - arrows(printed)
    assert not missing and not extra, (
        f"the Mermaid drawing on page 9.4 is stale: add {sorted(missing)}, remove "
        f"{sorted(extra)} (copy the printed lines into the drawing)"
    )
