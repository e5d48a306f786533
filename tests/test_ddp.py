"""DDP on 2 CPU processes (gloo) through Lightning's own launcher: both ranks end with identical weights;
a SLURM job whose ranks were never started (sbatch without srun) fails at once instead of waiting."""

from __future__ import annotations

import os
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


# what a batch script of `sbatch --ntasks-per-node=2` sees (no srun: no SLURM_STEP_* variables)
SBATCH_ENV = {
    "SLURM_JOB_ID": "77",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "localhost",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def test_sbatch_without_srun_fails_at_once(tmp_path):
    """Lightning made the one process rank 0 of 2 and waited for rank 1 (30 minutes, then an error)."""
    (tmp_path / "cfg.yaml").write_text(
        "model: {name: bcos_cifar10_9l, args: {width: 0.125}}\n"
        "data: {dataset: embedded, batch_size: 16, train_subset: 32}\n"
        "trainer: {epochs: 1, devices: 2, strategy: ddp, accelerator: cpu, progress_bar: false, num_threads: 1}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_"))}
    env.update(SBATCH_ENV, MASTER_PORT="29577")
    command = [sys.executable, "-m", "alignnet", "train", "--config", "cfg.yaml", "-o", "run"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]  # one line, at once
    assert "2 tasks (SLURM_NTASKS) but this process was not started by srun" in proc.stderr
    assert "wait for the other 1" in proc.stderr and "srun alignnet train" in proc.stderr


def test_slurm_launch_check_lets_real_launches_through():
    from alignnet.train.runner import check_slurm_launch

    check_slurm_launch({})  # no SLURM
    check_slurm_launch({**SBATCH_ENV, "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1"})  # one task
    check_slurm_launch({**SBATCH_ENV, "SLURM_STEP_NUM_TASKS": "2"})  # srun started both tasks
    check_slurm_launch({**SBATCH_ENV, "TORCHELASTIC_RUN_ID": "x"})  # torchrun inside the job: its own ranks
    check_slurm_launch({**SBATCH_ENV, "SLURM_JOB_NAME": "interactive"})  # Lightning ignores SLURM there
    with pytest.raises(ValueError, match="srun started 2 of them: .* rank 0 of 4 and wait for the other 2"):
        check_slurm_launch({**SBATCH_ENV, "SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "2"})


def test_evaluation_ranks_refuse_an_sbatch_job_without_srun():
    """``alignnet evaluate`` under sbatch --ntasks>1 without srun: rank 0 of 2 would wait for rank 1 (48 h)."""
    from alignnet.errors import InputError
    from alignnet.metrics.sharding import detect_ranks

    with pytest.raises(InputError, match="was not started by srun.*wait for the other 1"):
        detect_ranks(SBATCH_ENV)
    info = detect_ranks({**SBATCH_ENV, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"})  # srun started both
    assert (info.rank, info.world_size, info.launcher) == (1, 2, "slurm")


def test_ranks_on_one_gpu_join_a_gloo_group(monkeypatch):
    """``--processes 2 --device cuda`` on a one-GPU machine: both ranks get cuda:0, which NCCL refuses; the
    group only carries barriers, so it is gloo on every device."""
    import torch.distributed as dist

    from alignnet.metrics import sharding

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    devices = [sharding.shard_device("cuda", sharding.RankInfo(r, 2, r, "processes")) for r in range(2)]
    assert devices == [torch.device("cuda", 0)] * 2
    seen = {}
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.setdefault("device", d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.setdefault("backend", backend))
    assert sharding.init_process_group(sharding.RankInfo(1, 2, 1, "processes"), devices[1], "tcp://127.0.0.1:1")
    assert seen == {"device": torch.device("cuda", 0), "backend": "gloo"}
