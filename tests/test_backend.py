"""The backend seam: only bionn/backend/ imports TensorFlow, and the module Keras' backend selects answers
everything a run asks of a backend (bionn.backend.Backend)."""

from __future__ import annotations

import ast
import importlib
import inspect

from conftest import ROOT

from bionn import backend


def frameworks_imported(path) -> set[str]:
    """The top-level packages among tensorflow and jax that a source file imports (at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        found |= {n.split(".")[0] for n in names} & {"tensorflow", "jax"}
    return found


def test_only_the_backend_package_imports_a_framework():
    outside = {
        str(path.relative_to(ROOT)): frameworks_imported(path)
        for folder in ("bionn", "hydra_plugins")
        for path in (ROOT / folder).rglob("*.py")
        if (ROOT / "bionn" / "backend") not in path.parents
    }
    assert {path: names for path, names in outside.items() if names} == {}
    assert frameworks_imported(ROOT / "bionn" / "backend" / "tensorflow.py") == {"tensorflow"}
    assert frameworks_imported(ROOT / "bionn" / "backend" / "jax.py") == {"jax"}
    assert frameworks_imported(ROOT / "bionn" / "backend" / "jax_loop.py") == {"jax"}


def test_every_backend_answers_every_question_of_the_interface():
    engine = backend.current()
    assert engine.__name__ == backend.BACKENDS["tensorflow"]
    wanted = [n for n, _ in inspect.getmembers(backend.Backend, inspect.isfunction) if not n.startswith("_")]
    assert sorted(wanted) == [
        "devices",
        "enable_determinism",
        "evaluate",
        "feed",
        "fit",
        "gpu_capabilities",
        "make_strategy",
        "tensorboard",
    ]
    for module in backend.BACKENDS.values():  # the jax module too: importable here, it starts nothing
        implementation = importlib.import_module(module)
        for name in wanted:
            protocol, signature = (
                inspect.signature(getattr(backend.Backend, name)),
                inspect.signature(getattr(implementation, name)),
            )
            assert list(signature.parameters) == [p for p in protocol.parameters if p != "self"], (
                module,
                name,
            )
    assert all(isinstance(d, str) for d in engine.devices()) and engine.devices()
