"""The examples a user would copy still run (smoke tests, small settings)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, tmp_path, timeout=240):
    env = {**os.environ, "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


def test_seed_table_predicted(tmp_path):
    pytest.importorskip("torchvision")
    out = _run([os.path.join(ROOT, "examples", "seed_vgg_mobilenet.py"), "--predicted"], tmp_path)
    assert "VGG16" in out and "compute" in out and "memory" in out


def test_train_loop(tmp_path):
    out = _run([os.path.join(ROOT, "examples", "train_loop.py")], tmp_path)
    assert (tmp_path / "out" / "report.json").exists() and "Where the time goes" in out


def test_llm_whatif(tmp_path):
    out = _run([os.path.join(ROOT, "examples", "llm_whatif.py")], tmp_path)
    assert "decode 1 token" in out and "memory-bound" in out and "int8" in out
