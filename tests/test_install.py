"""The Detectron2 installer: the self-check, the named fixes, the _C stand-in, a training step."""

import tarfile
from pathlib import Path

import pytest
import torch
from conftest import REPO, load_tool

install = load_tool("install_detectron2")


def test_self_check_reports_a_working_detectron2():
    report = install.self_check()
    assert report["detectron2"].startswith("0.6")
    assert report["model_zoo_configs"] is True
    assert report["torch"] == torch.__version__
    # Whatever the build, the parts this project uses import (self_check imports them).
    import detectron2.evaluation  # noqa: F401
    import detectron2.modeling  # noqa: F401
    from detectron2.utils.visualizer import Visualizer  # noqa: F401

    if report["origin"].startswith("pure-Python"):
        assert "box_iou_rotated" in report["unavailable_ops"]


def test_missing_cpp_op_raises_a_named_error():
    from detectron2 import _C

    if not getattr(_C, "PURE_PYTHON_BUILD", False):
        pytest.skip("Detectron2 here is an official build with its C++ extension")
    assert _C.get_compiler_version().startswith("none")
    assert _C.has_cuda() is False
    with pytest.raises(AttributeError, match="box_iou_rotated is a C\\+\\+ op") as info:
        getattr(_C, "box_iou_rotated")  # noqa: B009
    assert type(info.value).__name__ == "MissingCppOpError"
    assert "built from source with its C++ extension" in str(info.value)
    # getattr with a default keeps working (Detectron2's collect_env relies on it).
    assert getattr(_C, "not_an_op", "default") == "default"


def test_model_zoo_config_files_are_found():
    from detectron2 import model_zoo

    path = Path(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    assert path.is_file() and (path.parent.parent / "Base-RCNN-FPN.yaml").is_file()
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    assert cfg.MODEL.MASK_ON


def test_sdist_with_a_wrong_hash_is_refused(tmp_path):
    fake = tmp_path / install.SDIST_FILE
    fake.write_bytes(b"not the real sdist")
    with pytest.raises(install.InstallError, match="refusing to build"):
        install.verify_sdist(fake)


def test_named_fixes_apply_to_the_pinned_sdist(tmp_path):
    sdist = install.DEFAULT_CACHE / install.SDIST_FILE
    if not sdist.is_file():
        pytest.skip(f"{sdist} is not cached (the installer keeps a user's own Detectron2 build)")
    install.verify_sdist(sdist)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    src = tmp_path / f"{install.SDIST_NAME}-{install.SDIST_VERSION}"
    for fix in install.NAMED_FIXES:
        fix(src)
    setup_py = (src / "setup.py").read_text()
    assert "ext_modules=[]," in setup_py and 'name="detectron2"' in setup_py
    assert len(list((src / "configs").rglob("*.yaml"))) >= 90  # 92 in v0.6
    assert "Image.LINEAR" not in (src / "detectron2/data/transforms/transform.py").read_text()
    assert "pkg_resources" not in (src / "detectron2/model_zoo/model_zoo.py").read_text()
    assert 'ret["_trainer"] = self._trainer.state_dict()' in (
        src / "detectron2/engine/defaults.py").read_text()
    assert '"GLOO"' in (src / "detectron2/engine/launch.py").read_text()
    for path in (src / "detectron2").rglob("*.py"):
        text = path.read_text()
        for alias in ("np.bool)", "np.int)", "np.float)", "np.str)"):
            assert alias not in text, f"{path}: {alias}"
    assert (src / "detectron2" / "_C.py").is_file()
    with pytest.raises(install.InstallError, match="expected 1 x"):
        install.fix_pillow10_linear(src)  # a fix that no longer matches fails loudly


def test_one_training_step_of_r50_fpn_checkpoints_the_optimizer(synthetic_root, tmp_path):
    """Mask R-CNN R50-FPN (the reference architecture, from random weights with trainable
    norms) runs one CPU iteration on a tiny generated image and saves its optimizer state."""
    from conftest import run_train_net, train_args

    run_train_net(train_args(synthetic_root, tmp_path, epochs=0, **{
        "MODEL.RESNETS.DEPTH": 50, "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
        "SOLVER.MAX_ITER": 1, "SOLVER.IMS_PER_BATCH": 1, "DATASETS.TEST": "()"}))
    checkpoint = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert any(k.startswith("backbone.bottom_up.res5.2.") for k in checkpoint["model"])
    optimizer = checkpoint["trainer"]["_trainer"]["optimizer"]
    assert optimizer["state"], "the optimizer's momentum buffers are not in the checkpoint"
    assert checkpoint["trainer"]["iteration"] == 0


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")
                and not line.startswith(("set ", "cd "))]
    assert commands == ["make test"]
    assert "make test" in (REPO / "README.md").read_text().split("\n## ")[0]
