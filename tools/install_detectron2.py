#!/usr/bin/env python
"""Install a working Detectron2 into the current Python environment.

The one place where this project gets (and, if needed, changes) Detectron2:

1. If an importable Detectron2 >= 0.6 with a working ``detectron2.modeling`` is present
   (a user's official build, or the wheel this script built earlier), keep it.
2. Otherwise build a pure-Python wheel from the registry package ``pb1-detectron2==0.6``,
   whose ``.py`` files and configs are byte-identical to upstream Detectron2 v0.6 but which
   lacks the C++ sources. The sdist's sha256 is pinned; the named fixes below are applied
   to the extracted sources, the wheel is cached under ``.cache/detectron2/`` and installed
   with normal pip metadata.
3. Print a self-check: version and origin, torch / CUDA, and which C++ ops are unavailable.

Usage:
    python tools/install_detectron2.py            # keep a present build, or build + install
    python tools/install_detectron2.py --check    # only the self-check
    python tools/install_detectron2.py --force    # rebuild the wheel even if cached
    python tools/install_detectron2.py --sdist pb1-detectron2-0.6.tar.gz   # offline
"""

import argparse
import hashlib
import html.parser
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# The local version label marks the wheel as this rebuild; `detectron2.__version__` stays "0.6".
WHEEL_VERSION_SUFFIX = "+purepy"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = PROJECT_ROOT / ".cache" / "detectron2"


class InstallError(RuntimeError):
    """A step of the installer failed; the message says which and why."""


# --------------------------------------------------------------------------------------------
# The C++ extension stand-in (written into the wheel as detectron2/_C.py)
# --------------------------------------------------------------------------------------------
STUB_C_MODULE = '''\
"""Stand-in for Detectron2's C++ extension (``detectron2._C``).

This Detectron2 was rebuilt as a pure-Python wheel by seg_project's
``tools/install_detectron2.py``; its C++/CUDA sources were not available. Mask R-CNN does
not need them (it uses torchvision's nms and roi_align, on CPU and CUDA). The ops that do
(rotated boxes, deformable convolution, the C++ COCO evaluation) raise
:class:`MissingCppOpError` naming the op.
"""

PURE_PYTHON_BUILD = True
# The C++ ops of Detectron2 v0.6 that this build lacks.
MISSING_OPS = (
    "box_iou_rotated",
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
    "COCOevalAccumulate",
    "COCOevalEvaluateImages",
    "InstanceAnnotation",
    "ImageEvaluation",
)


class MissingCppOpError(AttributeError):
    """Raised when code asks for a C++ op that this pure-Python build does not have."""


def get_compiler_version():
    return "none (pure-Python build, no C++ extension)"


def get_cuda_version():
    return "none (pure-Python build, no C++ extension)"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise MissingCppOpError(
        f"detectron2._C.{name} is a C++ op, and this Detectron2 is a pure-Python build "
        "without its C++ extension (made by seg_project's tools/install_detectron2.py). "
        f"Install Detectron2 built from source with its C++ extension to use {name}."
    )
'''


# --------------------------------------------------------------------------------------------
# Step 1: is a working Detectron2 already here?
# --------------------------------------------------------------------------------------------
def _version_tuple(version):
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def detect_existing():
    """Return ``(version, origin)`` of a working Detectron2 >= 0.6, or None.

    Runs in a subprocess so that a broken install cannot poison this interpreter.
    """
    probe = (
        "import importlib.util, json, detectron2, detectron2.modeling\n"
        "spec = importlib.util.find_spec('detectron2._C')\n"
        "origin = spec.origin if spec else None\n"
        "print(json.dumps({'version': detectron2.__version__, 'c_origin': origin,\n"
        "                  'path': detectron2.__file__}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tempfile.gettempdir()
    )
    if proc.returncode != 0:
        return None
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if _version_tuple(info["version"]) < (0, 6):
        return None
    return info["version"], _origin(info["c_origin"]), info["path"]


def _origin(c_origin):
    if c_origin is None:
        return "no detectron2._C at all (ops needing C++ will fail)"
    if c_origin.endswith(".py"):
        return "pure-Python wheel rebuilt from pb1-detectron2 by tools/install_detectron2.py"
    return "official build with its C++ extension"


# --------------------------------------------------------------------------------------------
# Step 2a: fetch and verify the sdist
# --------------------------------------------------------------------------------------------
def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _index_url():
    """The index pip is configured to use (PIP_INDEX_URL, pip config, or PyPI)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
            capture_output=True,
            text=True,
        )
        url = proc.stdout.strip() if proc.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


def download_sdist(dest_dir):
    """Download the pinned sdist into ``dest_dir`` and return its path.

    ``pip download --no-deps --no-binary :all: pb1-detectron2==0.6`` is tried first. pip >= 26
    refuses it after fetching ("Distributions from PyPI cannot declare direct URL dependencies":
    the sdist's ``all`` extra names panopticapi by URL), so the file is then taken from the
    same package index's simple page. Either way its sha256 is verified by the caller.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / SDIST_FILE
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--no-build-isolation", "-d", str(dest_dir), f"{SDIST_NAME}=={SDIST_VERSION}"]
    print("[install_detectron2] " + " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0 and target.exists():
        return target
    reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"[install_detectron2] pip download failed ({reason}); "
          "fetching the file from the index's simple page instead", flush=True)
    page_url = f"{_index_url()}/{SDIST_NAME}/"
    try:
        with urllib.request.urlopen(page_url, timeout=120) as resp:
            page = resp.read().decode("utf-8", "replace")
    except OSError as e:
        raise InstallError(f"cannot read the package index page {page_url}: {e}") from e
    parser = _LinkParser()
    parser.feed(page)
    for href in parser.links:
        file_url = urllib.parse.urljoin(page_url, href)
        name = urllib.parse.unquote(urllib.parse.urlsplit(file_url).path.rsplit("/", 1)[-1])
        if name == SDIST_FILE:
            break
    else:
        raise InstallError(f"{page_url} lists no {SDIST_FILE}")
    partial = target.with_suffix(".part")
    try:
        with urllib.request.urlopen(file_url.split("#")[0], timeout=300) as resp, open(
            partial, "wb"
        ) as out:
            shutil.copyfileobj(resp, out)
    except OSError as e:
        raise InstallError(f"cannot download {file_url}: {e}") from e
    partial.replace(target)
    return target


def verify_sdist(path):
    """Refuse to continue unless ``path`` has the pinned sha256."""
    actual = sha256_of(path)
    if actual != SDIST_SHA256:
        raise InstallError(
            f"{path}: sha256 is {actual}, expected {SDIST_SHA256}; refusing to build from it"
        )


# --------------------------------------------------------------------------------------------
# Step 2b: the named fixes, applied to the extracted sources
# --------------------------------------------------------------------------------------------
def _replace(src, relpath, old, new, count=1):
    """Replace ``old`` by ``new`` in ``src/relpath``, exactly ``count`` times (or fail)."""
    path = src / relpath
    text = path.read_text(encoding="utf-8")
    found = text.count(old)
    if found != count:
        raise InstallError(f"{relpath}: expected {count} x {old!r}, found {found}")
    path.write_text(text.replace(old, new), encoding="utf-8")


def fix_build_without_extensions(src):
    """No C++ sources: build no extension module, and ship the model-zoo configs.

    setup.py packages model-zoo configs by globbing a top-level ``configs/`` (symlinked into
    ``detectron2/model_zoo/configs``); the sdist only has the latter, so the wheel would hold
    0 YAML files. Move them to where setup.py looks.
    """
    _replace(src, "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],")
    # The distribution is named detectron2 so that `pip show detectron2` and packages that
    # depend on detectron2 see it.
    _replace(src, "setup.py", 'name="pb1-detectron2",', 'name="detectron2",')
    shutil.move(str(src / "detectron2" / "model_zoo" / "configs"), str(src / "configs"))


def fix_pillow10_linear(src):
    """Pillow >= 10 removed Image.LINEAR (upstream ff53992b)."""
    _replace(src, "detectron2/data/transforms/transform.py", "interp=Image.LINEAR",
             "interp=Image.BILINEAR")


NUMPY_ALIAS_FIXES = {
    # numpy >= 1.24 removed the builtin aliases (upstream 857d5de2, 027099d3, 54dd614e, 654570a2)
    "detectron2/evaluation/pascal_voc_evaluation.py": [(".astype(np.bool)", ".astype(bool)", 2)],
    "detectron2/evaluation/sem_seg_evaluation.py": [("dtype=np.int)", "dtype=int)", 2),
                                                    ("dtype=np.float)", "dtype=float)", 2),
                                                    (".astype(np.float)", ".astype(float)", 3)],
    "detectron2/structures/masks.py": [(".astype(np.bool)", ".astype(bool)", 2),
                                       ("dtype=np.bool)", "dtype=bool)", 1)],
    "detectron2/data/datasets/pascal_voc.py": [("dtype=np.str)", "dtype=str)", 1)],
    "detectron2/data/build.py": [("dtype=np.int)", "dtype=int)", 1),
                                 ("dtype=np.int\n", "dtype=int\n", 1)],
    "detectron2/utils/visualizer.py": [(".astype(np.bool)", ".astype(bool)", 3)],
    "detectron2/utils/video_visualizer.py": [("dtype=np.bool)", "dtype=bool)", 1)],
}


def fix_numpy124_aliases(src):
    """numpy >= 1.24: np.bool/np.int/np.float/np.str -> builtins."""
    for relpath, edits in NUMPY_ALIAS_FIXES.items():
        for old, new, count in edits:
            _replace(src, relpath, old, new, count)


def fix_model_zoo_without_pkg_resources(src):
    """setuptools >= 81 has no pkg_resources: resolve config paths next to model_zoo.py."""
    relpath = "detectron2/model_zoo/model_zoo.py"
    _replace(src, relpath, "import pkg_resources\n", "")
    _replace(
        src,
        relpath,
        'cfg_file = pkg_resources.resource_filename(\n'
        '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
        '    )',
        'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", '
        "config_path)",
    )


def fix_trainer_checkpoints_optimizer(src):
    """DefaultTrainer checkpoints its inner trainer's state (optimizer, grad scaler).

    In v0.6 DefaultTrainer inherits TrainerBase.state_dict (iteration and hooks only), so
    checkpoints lack the optimizer and --resume restarts momentum from zero (upstream 0ce0e0cc).
    """
    _replace(
        src,
        "detectron2/engine/defaults.py",
        "    @classmethod\n    def build_model(cls, cfg):",
        "    def state_dict(self):\n"
        "        ret = super().state_dict()\n"
        '        ret["_trainer"] = self._trainer.state_dict()\n'
        "        return ret\n\n"
        "    def load_state_dict(self, state_dict):\n"
        "        super().load_state_dict(state_dict)\n"
        '        self._trainer.load_state_dict(state_dict["_trainer"])\n\n'
        "    @classmethod\n    def build_model(cls, cfg):",
    )


def fix_distributed_on_cpu(src):
    """Multi-process training without CUDA: GLOO backend, no cuda.set_device (upstream
    b4b6cc9c); DDP of a CPU model gets device_ids=None (their issue 5146)."""
    relpath = "detectron2/engine/launch.py"
    _replace(
        src,
        relpath,
        '    assert torch.cuda.is_available(), "cuda is not available. Please check your '
        'installation."\n',
        "    has_gpu = torch.cuda.is_available()\n"
        "    if has_gpu:\n"
        "        assert num_gpus_per_machine <= torch.cuda.device_count()\n",
    )
    _replace(src, relpath, 'backend="NCCL",', 'backend="NCCL" if has_gpu else "GLOO",')
    _replace(
        src,
        relpath,
        "    assert num_gpus_per_machine <= torch.cuda.device_count()\n"
        "    torch.cuda.set_device(local_rank)\n",
        "    if has_gpu:\n        torch.cuda.set_device(local_rank)\n",
    )
    _replace(
        src,
        "detectron2/engine/defaults.py",
        '        kwargs["device_ids"] = [comm.get_local_rank()]\n',
        "        on_cuda = any(p.device.type == \"cuda\" for p in model.parameters())\n"
        '        kwargs["device_ids"] = [comm.get_local_rank()] if on_cuda else None\n',
    )


def fix_missing_cpp_extension(src):
    """detectron2._C: a Python module standing in for the missing C++ ops."""
    (src / "detectron2" / "_C.py").write_text(STUB_C_MODULE, encoding="utf-8")


NAMED_FIXES = (
    fix_build_without_extensions,
    fix_pillow10_linear,
    fix_numpy124_aliases,
    fix_model_zoo_without_pkg_resources,
    fix_trainer_checkpoints_optimizer,
    fix_distributed_on_cpu,
    fix_missing_cpp_extension,
)


# --------------------------------------------------------------------------------------------
# Step 2c: build, cache and install the wheel
# --------------------------------------------------------------------------------------------
def build_wheel(sdist, cache_dir):
    """Extract ``sdist``, apply the named fixes, build the wheel into ``cache_dir``."""
    with tempfile.TemporaryDirectory(prefix="d2build-") as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        # The sdist's egg-info describes the original package; let setuptools write a new one.
        shutil.rmtree(src / "pb1_detectron2.egg-info", ignore_errors=True)
        for fix in NAMED_FIXES:
            print(f"[install_detectron2] fix: {fix.__name__}: "
                  f"{fix.__doc__.strip().splitlines()[0]}", flush=True)
            fix(src)
        out = Path(tmp) / "wheel"
        env = dict(os.environ, D2_VERSION_SUFFIX=WHEEL_VERSION_SUFFIX)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
               "-w", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise InstallError("building the wheel failed:\n" + proc.stdout + proc.stderr)
        (wheel,) = out.glob("detectron2-*.whl")
        cache_dir.mkdir(parents=True, exist_ok=True)
        cached = cache_dir / wheel.name
        shutil.copy2(wheel, cached)
    return cached


def cached_wheel(cache_dir):
    wheels = sorted(cache_dir.glob(f"detectron2-{SDIST_VERSION}{WHEEL_VERSION_SUFFIX}-*.whl"))
    return wheels[-1] if wheels else None


def install_wheel(wheel):
    cmd = [sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps", str(wheel)]
    print("[install_detectron2] pip install " + wheel.name, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    # Then its dependencies, the usual way (no --force-reinstall for them).
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(wheel)], check=True)


# --------------------------------------------------------------------------------------------
# Step 3: the self-check
# --------------------------------------------------------------------------------------------
def self_check():
    """Import the parts this project uses and report what works; return a dict."""
    import detectron2
    import detectron2.evaluation  # noqa: F401
    import detectron2.modeling  # noqa: F401
    import torch
    from detectron2 import _C, model_zoo
    from detectron2.utils.visualizer import Visualizer  # noqa: F401

    spec = importlib.util.find_spec("detectron2._C")
    config_file = model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    missing = list(getattr(_C, "MISSING_OPS", ()))
    report = {
        "detectron2": detectron2.__version__,
        "detectron2_path": os.path.dirname(detectron2.__file__),
        "origin": _origin(spec.origin if spec else None),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "model_zoo_configs": os.path.isfile(config_file),
        "unavailable_ops": missing,
    }
    return report


def print_self_check(report):
    print("[install_detectron2] self-check:")
    print(f"  detectron2 {report['detectron2']} at {report['detectron2_path']}")
    print(f"  origin: {report['origin']}")
    print(f"  torch {report['torch']} (built for CUDA {report['torch_cuda']}, "
          f"CUDA available: {report['cuda_available']})")
    print(f"  model zoo configs found: {report['model_zoo_configs']}")
    ops = report["unavailable_ops"]
    print("  unavailable C++ ops: " + (", ".join(ops) if ops else "none"))
    print("  modeling, evaluation and Visualizer import: ok")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only print the self-check")
    parser.add_argument("--force", action="store_true",
                        help="rebuild the wheel even if one is installed or cached")
    parser.add_argument("--sdist", type=Path, help=f"a local {SDIST_FILE} (offline install)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the sdist and the built wheel are kept (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        if not args.check:
            existing = None if args.force else detect_existing()
            if existing:
                version, origin, path = existing
                print(f"[install_detectron2] keeping the Detectron2 {version} at {path} "
                      f"({origin})")
            else:
                wheel = None if args.force else cached_wheel(args.cache_dir)
                if wheel:
                    print(f"[install_detectron2] reusing the cached wheel {wheel}")
                else:
                    sdist = args.sdist or args.cache_dir / SDIST_FILE
                    if not sdist.exists():
                        sdist = download_sdist(args.cache_dir)
                    verify_sdist(sdist)
                    print(f"[install_detectron2] {sdist}: sha256 ok")
                    wheel = build_wheel(sdist, args.cache_dir)
                    print(f"[install_detectron2] built {wheel}")
                install_wheel(wheel)
        print_self_check(self_check())
    except InstallError as e:
        print(f"[install_detectron2] error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
