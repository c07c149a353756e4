"""edge_runtime must run on a device with no TensorFlow: importing it never loads TF. The
same holds for its evaluation room (edge_runtime/evaluation/), which no device module
imports."""

import subprocess
import sys
import textwrap

TENSORFLOW = ("tensorflow", "keras", "tf_keras", "tf2onnx")
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Forbidden(importlib.abc.MetaPathFinder):
        BLOCKED = BLOCKED_MODULES

        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b + ".") for b in self.BLOCKED):
                raise ImportError(f"{name} is forbidden in this process")
            return None

    sys.meta_path.insert(0, Forbidden())
    """
)


def _run(
    code: str, blocked: tuple[str, ...] = (*TENSORFLOW, "edgecap.train", "edgecap.export")
) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter where importing any of `blocked` raises ImportError."""
    blocker = BLOCKER.replace("BLOCKED_MODULES", repr(blocked))
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(code)], capture_output=True, text=True
    )


def test_blocker_really_blocks_tensorflow():
    result = _run("import tensorflow")
    assert result.returncode != 0 and "tensorflow is forbidden" in result.stderr


def test_importing_every_runtime_module_loads_no_tensorflow():
    result = _run(
        """
        import pkgutil, importlib, sys
        import edgecap.edge_runtime as rt
        device = [m.name for m in pkgutil.iter_modules(rt.__path__) if m.name != "evaluation"]
        for name in device:
            importlib.import_module(f"edgecap.edge_runtime.{name}")
        # No device module may pull in the evaluation room: the runtime folder's file
        # list is what a device runs.
        evaluation = sorted(m for m in sys.modules if m.startswith("edgecap.edge_runtime.evaluation"))
        print("device modules load evaluation:", evaluation)
        assert not evaluation
        import edgecap.edge_runtime.evaluation as ev
        for m in pkgutil.iter_modules(ev.__path__):
            importlib.import_module(f"{ev.__name__}.{m.name}")
        assert len([m for m in sys.modules if m.startswith(ev.__name__ + ".")]) >= 7
        heavy = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras") or m.startswith(("edgecap.train", "edgecap.export"))]
        print("loaded:", heavy)
        assert not heavy
        """
    )
    assert result.returncode == 0, result.stderr
    assert "device modules load evaluation: []" in result.stdout
    assert "loaded: []" in result.stdout


def test_edge_caption_captions_where_tensorflow_cannot_be_imported(e2e):
    from edgecap.edge_runtime.evaluation.datasets import load_dataset

    image = load_dataset(e2e["data"]).image_path(load_dataset(e2e["data"]).splits["test"][0])
    result = _run(
        f"""
        import sys
        from edgecap.edge_runtime.cli import main
        code = main(["--model", {str(e2e["bundle"])!r}, "--source", {str(image)!r}])
        assert "tensorflow" not in sys.modules
        sys.exit(code)
        """
    )
    assert result.returncode == 0, result.stderr
    source, caption = result.stdout.strip().split("\t")
    assert source == str(image) and len(caption.split()) >= 4


def _imported_names(path) -> set[str]:
    """Every module a file imports, at the top or inside a function, as an absolute name."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # Relative imports resolve against edgecap.benchmarks (level 1) or edgecap (2).
            base = ["edgecap.benchmarks", "edgecap"][node.level - 1] if node.level else ""
            names.add(".".join(p for p in (base, node.module or "") if p))
    return names


def test_benchmarks_import_edge_runtime_only():
    """The rooms (docs/design.md): the benchmark imports edge_runtime, never train/ or
    export/ (the Keras baselines run those in a child process of their own; render loads
    the docs tables' drawers by name, checked below)."""
    from pathlib import Path

    root = Path(__file__).parents[2] / "benchmarks"
    files = sorted(f for f in root.glob("*.py") if f.name != "render.py")  # by name: below
    assert len(files) > 5
    offending = {
        f.name: sorted(
            n for n in _imported_names(f) if n.startswith(("edgecap.train", "edgecap.export"))
        )
        for f in files
    }
    assert {k: v for k, v in offending.items() if v} == {}
    result = _run(
        """
        import pkgutil, importlib
        import edgecap.benchmarks as b
        for m in pkgutil.iter_modules(b.__path__):
            importlib.import_module(f"edgecap.benchmarks.{m.name}")
        print("imported all")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "imported all" in result.stdout


def test_the_docs_tables_drawers_load_no_tensorflow():
    """`caption-bench render` finds each table's drawer by name in the module that writes
    its data (the demo, the evaluation record in train/, the studies): none of them may
    bring TensorFlow into the render command."""
    result = _run(
        """
        import sys
        from edgecap.benchmarks.render import TABLES, table_function
        for kind in TABLES.values():
            assert callable(table_function(kind.drawn_by)), kind.drawn_by
        print("drawers", len(TABLES), "tensorflow" in sys.modules, "keras" in sys.modules)
        """,
        blocked=TENSORFLOW,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["5", "False", "False"]
