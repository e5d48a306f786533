"""The base install as a fresh machine has it: every optional package made unimportable.

The suite runs with the test extras installed, so an import of Lightning, FastAPI or scikit-image on a
base path would pass every other test (it did, twice). Here each command runs in a subprocess whose
``sitecustomize`` puts a meta-path finder in front of the import system that refuses every top-level
module of every installed distribution outside the base dependencies' closure (computed from this
environment's metadata, so a new optional package is refused without editing this file). Then the
README's commands that the base install promises must work, and those that need an extra must exit
with code 2 and one line naming it.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from PIL import Image

# what a fresh venv has besides the project's dependencies (pip's own machinery)
_FRESH_VENV = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "wheel"}
# the extras' packages, refused even if the metadata walk below missed them
_ALWAYS_BLOCKED = {"lightning", "pytorch_lightning", "fastapi", "starlette", "uvicorn", "multipart", "skimage"}
_ALWAYS_BLOCKED |= {"sklearn", "bcos", "einops", "quantus", "playwright", "hypothesis", "httpx", "pytest"}

_FINDER = '''
import sys
from importlib.machinery import PathFinder

BLOCKED = frozenset({blocked!r})


class _BaseInstallPathFinder(PathFinder):
    """sys.path's finder, except that the optional packages are not there (as on a fresh machine: both
    ``import x`` and ``importlib.util.find_spec(x)`` see nothing)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_BaseInstallPathFinder if f is PathFinder else f for f in sys.meta_path]
'''


def _base_closure() -> set[str]:
    """Normalised names of alignnet's base dependencies and theirs, recursively (no extras)."""
    seen: set[str] = set()
    todo = ["alignnet"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # an extra's requirement, or not for this platform
            todo.append(req.name)
    return seen


def blocked_modules() -> set[str]:
    """Top-level modules installed here that the base install would not have."""
    base = _base_closure()
    blocked = set(_ALWAYS_BLOCKED)
    for module, dists in md.packages_distributions().items():
        if module in _FRESH_VENV or module in sys.stdlib_module_names or module.startswith("__"):
            continue
        if not any(d.lower().replace("_", "-") in base for d in dists):
            blocked.add(module)
    blocked.discard("alignnet")
    return blocked


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """``run(*args, cwd=...)``: the ``alignnet`` CLI in a subprocess that sees only the base install."""
    root = tmp_path_factory.mktemp("fresh")
    site = root / "site"
    site.mkdir()
    blocked = blocked_modules()
    (site / "sitecustomize.py").write_text(_FINDER.format(blocked=sorted(blocked)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MPLBACKEND": "Agg",
        "ALIGNNET_HOME": str(root / "home"),
    }

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [sys.executable, "-m", "alignnet", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )

    run.blocked, run.env, run.root = blocked, env, root
    return run


def test_the_blocker_blocks_what_the_extras_install(fresh):
    assert {"lightning", "fastapi", "uvicorn", "skimage", "pytest"} <= fresh.blocked
    assert not {"torch", "torchvision", "numpy", "PIL", "captum", "av", "safetensors"} & fresh.blocked
    code = "import importlib, sys\n"
    code += "for m in ('lightning', 'fastapi', 'skimage'):\n"
    code += (
        "    try:\n        importlib.import_module(m)\n    except ModuleNotFoundError:\n        print('refused', m)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=fresh.env, capture_output=True, text=True)
    assert run.stdout.split("\n")[:3] == ["refused lightning", "refused fastapi", "refused skimage"], run.stderr


def test_library_imports_need_only_the_base_install(fresh):
    modules = [
        "alignnet",
        "alignnet.demo",
        "alignnet.video",
        "alignnet.metrics",
        "alignnet.attribution",
        "alignnet.bcosification",
        "alignnet.train.config",
        "alignnet.serve.backend",
    ]
    code = f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    code += "import alignnet\nfor name in alignnet.list_pretrained():\n"
    code += "    e = alignnet.pretrained.get_weights(name)\n"
    code += "    if e.file is not None:\n        alignnet.load_pretrained(name)\n"
    code += "print(sorted(m for m in sys.modules if m.startswith('alignnet.train.') and m != 'alignnet.train.config'))"
    run = subprocess.run([sys.executable, "-c", code], env=fresh.env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"  # loading the shipped models never imports the trainer


@pytest.mark.slow
def test_demo_in_an_empty_directory_with_only_the_base_install(fresh):
    work = fresh.root / "demo"
    run = fresh("demo", "--quick", "--no-progress", cwd=work)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert (work / "alignnet-demo" / "index.html").is_file()
    assert "bcosified: test accuracy" in run.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real inputs for the README's commands: two Fashion-MNIST test items and a short mp4 clip of them."""
    from alignnet.data import load_embedded
    from alignnet.video import write_animation

    root = tmp_path_factory.mktemp("inputs")
    images = load_embedded("test").images[:8]
    Image.fromarray(255 - images[0]).save(root / "shirt.png")  # dark item on light, as a photo would be
    Image.fromarray(255 - images[1]).convert("RGB").save(root / "bag.jpg", quality=95)
    frames = np.stack([np.repeat(np.pad(255 - im, 2, constant_values=255)[..., None], 3, axis=2) for im in images])
    write_animation(root / "clip.mp4", frames, fps=4)
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["explain", "{in}/shirt.png", "{in}/bag.jpg", "--target", "top3", "--layers", "--out", "explanations/"],
        ["explain", "{in}/shirt.png", "--model", "fmnist_bcosified", "--out", "bcosified/"],
        ["compare", "{in}/shirt.png", "--methods", "ours,gradcam,intgrad,occlusion5", "--out", "compare.png"],
        ["video", "{in}/clip.mp4", "--model", "fmnist_coda", "--out", "clip_explained.gif"],
        ["video", "{in}/clip.mp4", "--out", "clip_explained.mp4", "--max-frames", "4"],
        ["evaluate", "--model", "fmnist_bcos", "--metric", "localisation", "--methods", "ours", "--n-grids", "2"]
        + ["--out", "runs/x"],
        ["models"],
        ["models", "--pretrained"],
        ["toy", "--out", "toy.png"],
        ["train", "--list-presets"],
        ["train", "--preset", "fmnist-bcos", "--print-config"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_readme_commands_work_with_only_the_base_install(fresh, files, args, tmp_path):
    args = [a.replace("{in}", str(files)) for a in args]
    run = fresh(*args, cwd=tmp_path / "work")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, extra",
    [
        (["serve", "--port", "8765"], "web"),
        (["train", "--preset", "fmnist-bcos", "--output", "run", "--epochs", "1"], "train"),
        (["compare", "{in}/shirt.png", "--methods", "ours,lime", "--out", "c.png"], "lime"),
    ],
    ids=lambda a: a if isinstance(a, str) else a[0],
)
def test_a_missing_extra_is_one_line_naming_it(fresh, files, args, extra, tmp_path):
    args = [a.replace("{in}", str(files)) for a in args]
    run = fresh(*args, cwd=tmp_path / "work")
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"alignnet {args[0]} needs the {extra} extra" in lines[0]
    assert f'pip install "alignnet[{extra}]"' in lines[0]
    assert not (tmp_path / "work" / "run").exists()  # nothing half-made before the refusal
