"""Two processes under torchrun (gloo, CPU): DDP keeps the replicas identical; only rank 0 writes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.tiny_training import KEY, make_dataset, make_params

torch.set_num_threads(1)

_SCRIPT = textwrap.dedent(
    """
    import hashlib, os
    import torch
    torch.set_num_threads(1)
    from tests import tiny_training  # registers the tiny models (PYTHONPATH: the repository root)
    from benchmark.params import load_params
    from benchmark.train import run

    run({key!r}, "tiny_test", load_params("params.yaml"))
    model = tiny_training.LAST_MODEL[0]
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    with open(f"rank{{os.environ['RANK']}}.hash", "w") as f:
        f.write(h.hexdigest() + " " + str(model.steps))
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    make_dataset(tmp_path)
    make_params(tmp_path, epochs=2, triplets=32, batch=8)
    script = tmp_path / "run_ddp.py"
    script.write_text(_SCRIPT.format(key=KEY))
    repo = Path(__file__).resolve().parents[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "--master_port=0", "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", str(script)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    h0, steps0 = (tmp_path / "rank0.hash").read_text().split()
    h1, steps1 = (tmp_path / "rank1.hash").read_text().split()
    # 32 triplets / 8 per step = 4 steps per epoch, each rank running 4 triplets per step
    assert steps0 == steps1 == "8"
    assert h0 == h1
    ck = torch.load(tmp_path / "models" / KEY / "tiny_test" / "seed0" / "checkpoint.pt", weights_only=True)
    assert ck["complete"] and ck["world_size"] == 2
    h = hashlib.sha256()
    for k, v in sorted(ck["model"].items()):
        h.update(k.encode())
        h.update(v.contiguous().numpy().tobytes())
    assert h.hexdigest() == h0  # the checkpoint rank 0 wrote is what both ranks hold
    log = (tmp_path / "reports" / KEY / "tiny_test" / "train_log.csv").read_text().splitlines()
    assert len(log) == 1 + 8  # one row per step, written once (rank 0 only)
    assert not list(tmp_path.rglob("*.tmp"))
