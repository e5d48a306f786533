"""DDP on 2 CPU processes (gloo) through Lightning's own launcher: both ranks end with identical weights."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("lightning")

from safetensors.torch import load_file  # noqa: E402

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import save_file
    from lightning.pytorch.utilities import rank_zero_only
    from alignnet.train import config_from_dict, train

    out = sys.argv[1]
    config = config_from_dict({
        "model": {"name": "bcos_cifar10_9l", "args": {"width": 0.125}},
        "data": {"dataset": "embedded", "batch_size": 16, "train_subset": 64},
        "trainer": {"epochs": 1, "devices": 2, "strategy": "ddp", "accelerator": "cpu",
                    "progress_bar": False, "num_threads": 1, "limit_val_batches": 2},
    })
    result = train(config, out + "/run")
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, f"{out}/rank{rank_zero_only.rank}.safetensors")
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert w0.keys() == w1.keys() and len(w0) > 0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    init = config_model_init()
    assert any(not torch.equal(w0[k], init[k]) for k in w0)  # training changed the weights
    assert (tmp_path / "run" / "model.safetensors").is_file()


def config_model_init() -> dict[str, torch.Tensor]:
    """The seeded initial weights (seed 0 as in the script's default config) to show training moved them."""
    import lightning as L

    from alignnet.models import create_model

    L.seed_everything(0, verbose=False)
    return create_model("bcos_cifar10_9l", width=0.125).state_dict()
