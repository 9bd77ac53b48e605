"""The shape of the source tree: no import circles, no names that say two different things.

The import graph is read from the source with `ast`, every import of a module counted, those
inside functions too: an import deferred into a function to dodge a circle still ties the two
modules together, and only hides the circle until someone moves it. Imports under
`if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "rainier"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes that sit under `if TYPE_CHECKING:`."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _known(name: str) -> str | None:
    """The rainier module an imported name lives in (a module, or the module defining it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*head, *([node.module] if node.module else [])])
            # `from package import module` names the module; any other name, the package.
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    targets = {_known(name) for name in found if name.split(".")[0] == "rainier"}
    return {t for t in targets if t is not None and t != module}


def import_graph() -> dict[str, set[str]]:
    return {module: imports_of(module) for module in MODULES}


def test_the_import_graph_reads_the_source() -> None:
    graph = import_graph()
    assert "rainier.scheduler.quota_book" in graph["rainier.scheduler.policy"]
    assert "rainier.cli.render" in graph["rainier.demo"]
    # an import inside a function counts: spec checks training overrides lazily
    assert "rainier.train.config" in graph["rainier.spec"]


def test_no_import_circles() -> None:
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


# Modules whose names were taken by two things and were renamed: none may come back.
RETIRED_MODULES = {
    "rainier.control.metering": "rainier.accounting (the ledger in the database)",
    "rainier.scheduler.ledger": "rainier.scheduler.quota_book (chips, not money)",
    "rainier.serve.scheduler": "rainier.serve.batch_scheduler (beside rainier.scheduler)",
}

# Module names used more than once on purpose: each is read with its package, as the parts of
# a domain are named alike across domains (every runtime has its metrics and its model).
SHARED_MODULE_NAMES = {
    # a REST router and the service it calls share their resource's name: the router reads the
    # request and checks the caller, the service does the work (routers stay thin)
    "billing": "the CLI's bill commands; the billing service the API calls",
    "contracts": "the contracts router; the service it calls",
    "jobs": "the jobs router; the service it calls",
    "models": "the model registry's router; the service it calls",
    "nodes": "the nodes router; the service it calls",
    "tenants": "the tenants router; the service it calls",
    "__main__": "each runnable package's entry point",
    "chat": "the CLI's chat command; the replica's chat template",
    "client": "the CLI's HTTP client; the console's",
    "config": "the server's settings; a served model's config.json; a trained model's shape",
    "deployments": "the controller of deployments; their REST router; the service it calls",
    "engine": "the serving engine; the simulator's event loop",
    "env": "what a task's environment says, for the trainer and for the control plane",
    "errors": "each package's own errors",
    "export": "a trained model written as HF weights; ledger lines written as CSV",
    "flavors": "the operator's flavor catalog; its REST router",
    "metrics": "each runtime's own metrics",
    "model": "each runtime's own model (serving, training, the simulator's inputs)",
    "plan": "the planner of the control plane, of one scheduling pass, of capacity in the sim",
    "plans": "the CLI's and the API's quota plans",
    "tokenizer": "the serving and the training tokenizer",
    "usage": "metering usage (pure); its REST router",
}


def test_retired_module_names_stay_retired() -> None:
    back = sorted(set(RETIRED_MODULES) & set(MODULES))
    assert not back, {name: RETIRED_MODULES[name] for name in back}


def test_no_module_is_named_like_a_package() -> None:
    packages = {m.rpartition(".")[2] for m, p in MODULES.items() if p.name == "__init__.py"}
    clashing = sorted(
        m
        for m, p in MODULES.items()
        if p.name != "__init__.py" and m.rpartition(".")[2] in packages
    )
    assert clashing == [], f"modules named like a rainier package: {clashing}"


def test_module_names_are_not_reused_unawares() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        if path.name != "__init__.py":
            by_name[module.rpartition(".")[2]].append(module)
    reused = {n: ms for n, ms in by_name.items() if len(ms) > 1 and n not in SHARED_MODULE_NAMES}
    assert reused == {}, "a second module of the same name: rename it, or say why it is shared"


# Classes defined under one name in two modules, on purpose: the OpenAI wire format is declared
# once for the replica (`serve.protocol`, validated) and once for the gateway's OpenAPI
# document (`api.openapi`, described only), and the rest are read within their package.
SHARED_CLASS_NAMES = {
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "ModelCard",
    "ModelList",
    "Usage",
    "Block",  # a KV-cache block, a transformer block, a block of a console page
    "Edge",  # the API's outermost middleware; the replica's base of request models
    "UsageError",  # a CLI usage error; a training script's
}

# Classes that were defined twice for different things and were renamed.
RETIRED_CLASS_NAMES = {"ModelConfig", "Scheduler", "Ledger", "Plan", "Target"}


def _classes() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for module, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                found[node.name].append(module)
    return found


def test_class_names_are_not_reused_unawares() -> None:
    reused = {
        name: modules
        for name, modules in _classes().items()
        if len(modules) > 1 and name not in SHARED_CLASS_NAMES
    }
    assert reused == {}, "a second class of the same name: rename it, or say why it is shared"


def test_renamed_classes_are_defined_once() -> None:
    classes = _classes()
    twice = {name: classes[name] for name in RETIRED_CLASS_NAMES if len(classes[name]) > 1}
    assert twice == {}
