"""The package's layout promises: a light ``import seg_project`` (no Detectron2, no torch),
tools whose ``--help`` loads neither, and datasets and models registered for users who import
the package and then call Detectron2 themselves."""

import subprocess
import sys

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
