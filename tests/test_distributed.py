import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_training_runs_unchanged_under_torchrun_with_two_gloo_processes(tiny_bert_dir, humor_frame, tmp_path):
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    humor_frame.iloc[:32].to_csv(train, index=False)
    humor_frame.iloc[32:].to_csv(valid, index=False)
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",  # a free port, chosen by torchrun
            "-m", "jace", "train", "--train", str(train), "--eval", str(valid), "--model", str(tiny_bert_dir),
            "--output-dir", str(run), "--epochs", "1", "--batch-size", "4", "--device", "cpu",
        ],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "final" / "training_summary.json").read_text())
    assert summary["environment"]["world_size"] == 2
    # 32 rows, 4 per process, 2 processes: 4 optimizer steps in one epoch.
    assert summary["metrics"]["train"]["epoch"] == 1
    assert (run / "final" / "adapter_model.safetensors").is_file()
