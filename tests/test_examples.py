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


def test_compiled_vs_eager_writes_two_runs_the_roofline_tab_serves(tmp_path):
    # Issue 15: compiled and eager runs of one model, side by side in the Roofline tab. The
    # tab's compare mode draws any two runs' reports (browser test); here the pair itself.
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile's CPU backend needs a C++ compiler")
    pytest.importorskip("tensorboard")
    out = _run([os.path.join(ROOT, "examples", "compiled_vs_eager.py"), "--batch", "8", "--width", "64",
                "--logdir", "tb"], tmp_path, timeout=400)
    assert "graph_0_cpp_fused_gelu_0" in out and "10,240 FLOPs" in out  # 5 ops x 8 x 256

    from _tensorboard_helpers import PREFIX, _json, make_client

    client = make_client(str(tmp_path / "tb"))
    runs = _json(client.get(f"{PREFIX}/runs"))
    assert runs == {"compiled": {"roofline": [0]}, "eager": {"roofline": [0]}}
    compiled = _json(client.get(f"{PREFIX}/report?run=compiled&tag=roofline&step=0"))
    eager = _json(client.get(f"{PREFIX}/report?run=eager&tag=roofline&step=0"))
    assert any("cpp_fused" in o["op"] for o in compiled["ops"])
    assert not any("cpp_fused" in o["op"] for o in eager["ops"])
