"""The README's commands as a new user runs them, and one image giving one answer everywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alignnet
from alignnet.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _alignnet_command() -> list[str]:
    """The installed ``alignnet`` script next to this interpreter (what the README's command runs)."""
    script = Path(sys.executable).parent / "alignnet"
    if script.is_file():
        return [str(script)]
    found = shutil.which("alignnet")
    return [found] if found else [sys.executable, "-m", "alignnet"]


def test_readme_demo_command_is_the_one_tested():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1)
    assert first_block.rstrip().endswith("&& alignnet demo"), first_block  # default arguments, default --out


@pytest.mark.slow
def test_demo_with_default_arguments_in_a_fresh_working_directory(tmp_path):
    """``alignnet demo`` exactly as the README has it (``--quick`` to keep the suite short), from an empty
    directory, default relative ``--out``, as a subprocess: the report and every file it links exist."""
    from alignnet.report import linked_files

    env = {**os.environ, "MPLBACKEND": "Agg", "ALIGNNET_HOME": str(tmp_path / "home")}
    work = tmp_path / "fresh"
    work.mkdir()
    run = subprocess.run(
        [*_alignnet_command(), "demo", "--quick", "--no-progress"], cwd=work, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = work / "alignnet-demo" / "index.html"
    assert report.is_file()
    links = linked_files(report.read_text())
    assert len(links) >= 8 and all((report.parent / f).is_file() for f in links)
    assert not (tmp_path / "home").exists()  # nothing downloaded, no cache written


def test_python_dash_m_alignnet_is_the_cli():
    run = subprocess.run([sys.executable, "-m", "alignnet", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "evaluate" in run.stdout and "demo" in run.stdout


def test_library_never_imports_the_cli():
    src = Path(alignnet.__file__).parent
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.parent.name != "cli"
        and p.name != "__main__.py"
        and re.search(r"from \.+cli\b|import alignnet\.cli|from alignnet\.cli", p.read_text())
    ]
    assert offenders == []
    code = "import sys, alignnet, alignnet.demo, alignnet.video, alignnet.serve.backend, alignnet.metrics; "
    code += "print(any(m.startswith('alignnet.cli') for m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip() == "False", run.stderr


def test_explain_and_web_page_give_the_same_input_and_logits(tmp_path, capsys):
    """One photo through ``alignnet explain`` and through the web API: identical input, identical logits."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from alignnet.cli._common import load_images
    from alignnet.serve.app import create_app
    from alignnet.serve.backend import build_models, decode_image, prepare_image

    rng = np.random.default_rng(0)
    photo = np.full((90, 70, 3), 235, np.uint8)  # a light background (inverted for Fashion-MNIST models)
    photo[20:70, 15:55] = rng.integers(0, 120, (50, 40, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=95)

    served = build_models(["fmnist_bcos"])
    model = served[0].model
    cli_input = load_images([path], model)[0]
    web_input, notes = prepare_image(decode_image(path.read_bytes()), served[0])
    assert notes["inverted"] is True
    assert torch.equal(cli_input, web_input)

    assert main(["explain", str(path), "--model", "fmnist_bcos", "--out", str(tmp_path / "out")]) == 0
    printed = re.search(r"\((\d+)\) logit (-?[\d.]+)", capsys.readouterr().out)
    client = TestClient(create_app(served, methods=["grad"]))
    reply = client.post("/api/explain", params={"model": "fmnist_bcos"}, content=path.read_bytes()).json()
    assert reply["predicted"] == int(printed.group(1))
    assert reply["top"][0]["logit"] == pytest.approx(float(printed.group(2)), abs=0.006)  # printed with 2 decimals
    with torch.no_grad():
        logits = model(cli_input[None])[0]
    assert reply["top"][0]["logit"] == pytest.approx(float(logits.max()), abs=1e-5)
