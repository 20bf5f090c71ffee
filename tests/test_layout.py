"""The package's layout promises: a light ``import seg_project`` (no Detectron2, no torch),
tools whose ``--help`` loads neither, datasets and models registered for users who import
the package and then call Detectron2 themselves, and imports that follow the floors.

The floors, from the ground up: utils, modeling; data; config, checkpoint; submission,
export; inference; evaluation, visualization; analysis; engine; tools. A module imports only
from its own floor or lower ones, and no two modules import each other (directly or through
others; function-level imports count). Only ``seg_project/config.py`` reads YAML."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py") if p.stem != "install_detectron2")


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_importing_the_package_loads_neither_detectron2_nor_torch():
    out = _python("import sys, seg_project\n"
                  "print(sorted(m for m in ('detectron2', 'torch') if m in sys.modules))")
    assert out.strip() == "[]"


def test_every_tools_help_loads_neither_detectron2_nor_torch():
    """One process runs every tool's --help in turn (the tools share one start-up)."""
    code = (
        "import runpy, sys\n"
        f"for tool in {TOOLS!r}:\n"
        "    sys.argv = [tool, '--help']\n"
        "    try:\n"
        f"        runpy.run_path({str(REPO / 'tools')!r} + '/' + tool + '.py', "
        "run_name='__main__')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (tool, e.code)\n"
        "    heavy = [m for m in ('detectron2', 'torch') if m in sys.modules]\n"
        "    print(tool, heavy, file=sys.stderr)\n"
        "    assert not heavy, (tool, heavy)\n"
        "print('ok')\n"
    )
    assert _python(code).strip().endswith("ok")
    assert {"train_net", "predict", "evaluate", "report", "check_submission"} <= set(TOOLS)


def test_datasets_and_cells_rpn_register_when_detectron2_is_imported():
    out = _python(
        "import seg_project\n"
        "from detectron2.data import DatasetCatalog, MetadataCatalog\n"
        "from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY\n"
        "names = DatasetCatalog.list()\n"
        "print(all(n in names for n in ('cells_train', 'cells_val', 'cells_trainval', "
        "'cells_test')), 'CellsRPN' in PROPOSAL_GENERATOR_REGISTRY, "
        "MetadataCatalog.get('cells_test').evaluator_type)")
    assert out.split() == ["True", "True", "none"]


def test_registration_also_when_detectron2_came_first():
    out = _python(
        "import detectron2.data, detectron2.modeling\n"
        "import seg_project\n"
        "from detectron2.data import DatasetCatalog\n"
        "from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY\n"
        "print('cells_train' in DatasetCatalog.list(), 'CellsRPN' in PROPOSAL_GENERATOR_REGISTRY)")
    assert out.split() == ["True", "True"]


# ------------------------------------------------------------------ import floors
# seg_project's packages by floor, from the ground up (shared/DESIGN.md, "Boundaries"); tools/
# stand on top of them all.
FLOORS = (
    ("utils", "modeling", "_lazy_registration"),
    ("data",),
    ("config", "checkpoint"),
    ("submission", "export"),
    ("inference",),
    ("evaluation", "visualization"),
    ("analysis",),
    ("engine",),
)
FLOOR_OF = {package: level for level, packages in enumerate(FLOORS) for package in packages}
PACKAGE = REPO / "seg_project"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set) -> set:
    """The seg_project modules that ``path`` imports, at any depth of its code (function-level
    imports included); ``from package import module`` names the module."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [(target, [alias.name for alias in node.names])]
        else:
            continue
        for target, names in targets:
            if target != "seg_project" and not target.startswith("seg_project."):
                continue
            submodules = {f"{target}.{n}" for n in names} & modules
            found |= submodules or {target}
    found.discard(name)
    return found


def _import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _floor(module: str):
    """(package, floor) of a module; the package's own ``__init__`` has no floor."""
    parts = module.split(".")
    if len(parts) == 1:
        return None, None
    return parts[1], FLOOR_OF.get(parts[1])


def _loops(graph: dict) -> list:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.get(module, ()):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_each_package_imports_only_its_floor_or_lower_ones():
    graph = _import_graph()
    assert "seg_project.engine.trainer" in graph and graph["seg_project.inference.predictor"]
    unplaced = sorted({package for module in graph for package, floor in [_floor(module)]
                       if package is not None and floor is None})
    assert not unplaced, f"put these packages on a floor of FLOORS: {unplaced}"
    upward = []
    for module, imported in sorted(graph.items()):
        package, floor = _floor(module)
        if package is None:
            continue  # seg_project/__init__.py: the registrations after Detectron2's import
        for other in sorted(imported):
            other_package, other_floor = _floor(other)
            if other_package is not None and other_floor > floor:
                upward.append(f"{module} ({package}) imports {other} ({other_package})")
    assert not upward, "imports that run up a floor:\n" + "\n".join(upward)


def test_no_two_modules_import_each_other():
    loops = _loops(_import_graph())
    assert not loops, f"modules that import each other: {loops}"


def test_config_files_are_read_by_seg_project_config_only():
    """One place reads YAML (``seg_project.config``), so that one place decides what a config
    file may do."""
    readers = []
    for folder in ("seg_project", "tools", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == PACKAGE / "config.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                called = (node.func.attr if isinstance(node, ast.Call)
                          and isinstance(node.func, ast.Attribute) else "")
                if "yaml" in names or called in ("merge_from_file", "load_yaml_with_base"):
                    readers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not readers, f"read YAML outside seg_project/config.py: {readers}"
