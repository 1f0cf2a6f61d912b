"""The torch-roofline command: count, profile, devices, errors."""

import json
import subprocess
import sys

import pytest

from torch_roofline.cli import main as cli


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("torch-roofline ")


def test_count_json_matches_the_api(capsys):
    torchvision = pytest.importorskip("torchvision")
    import torch

    from torch_roofline import count

    rc = cli(["count", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--json", "--memory-model", "compulsory"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    torch.manual_seed(0)
    expected = count(torchvision.models.resnet18().eval(), torch.randn(1, 3, 64, 64), memory_model="compulsory")
    # FLOPs depend on shapes only, not on the random weights
    assert data["total"]["flops"] == expected.total.flops
    assert data["memory_model"] == "compulsory"
    assert [m["name"] for m in data["modules"]][:2] == ["", "conv1"]


def test_count_train_table(capsys):
    rc = cli(["count", "torchvision:resnet18", "--input-shape", "2,3,32,32", "--train", "--device", "meta", "--depth", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ResNet" in out and "layer4" in out and "GFLOPs" in out


def test_profile_writes_report_csv_and_chart(tmp_path, capsys):
    out = tmp_path / "o"
    rc = cli(["profile", "torchvision:resnet18", "--input-shape", "1,3,64,64", "--steps", "1",
              "--roof", "gtx-1080-ti", "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "Where the time goes" in captured.out
    # long work shows progress on stderr: each step (1 warm-up + --steps 1), the analysis, the files
    for line in ("step 1/2 (warm-up)", "step 2/2 (profiled)", "counting the recorded calls", "wrote "):
        assert line in captured.err, line
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "torch_roofline.report/1" and report["device"]["id"] == "gtx-1080-ti"
    assert (out / "report.csv").read_text().splitlines()[0].startswith("name")
    assert (out / "roofline.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, message", [
    (["count", "torchvision:resnet181", "--input-shape", "1,3,8,8"], "close matches"),
    (["count", "nosuchpkg.mod:factory", "--input-shape", "1,3,8,8"], "cannot import"),
    (["count", "torchvision:resnet18", "--input-shape", "1,a,8"], "comma-separated integers"),
    (["count", "torchvision:resnet18"], "--input-shape"),
    (["profile", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--roof", "no-such-gpu"], "unknown device"),
])
def test_bad_input_names_the_problem(argv, message, capsys):
    assert cli(argv) == 1
    err = capsys.readouterr().err
    assert message in err and f"torch-roofline {argv[0]}: error:" in err


def test_console_entry_point_runs_quietly():
    # python -m torch_roofline is what the console script calls; no Kineto noise on stderr
    proc = subprocess.run([sys.executable, "-m", "torch_roofline", "devices", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ids = [d["id"] for d in json.loads(proc.stdout)]
    assert "h100-sxm" in ids and len(ids) >= 30
