"""The Lightning callback: real ``Trainer.fit`` runs on the CPU, both namespaces.

Oracles: the events are read back through TensorBoard's own data route and the Roofline
plugin's route (not our writer); the conv's FLOPs against torch's FlopCounterMode; the
no-leftover checks against torch's own profiler flag and the modules' hook dicts; the
identical-training check against a run without the callback.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import tempfile
import warnings

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning.pytorch")

from torch_roofline.lightning import (  # noqa: E402
    Roofline,
    RooflineSchedule,
    comm_scalars,
    rank_summary,
    report_scalars,
)

ROOF = "i9-10980xe"  # a catalog CPU: no bandwidth benchmark inside the tests
STEPS = 6  # wait 2 + warmup 1 + active 2, plus one


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.25)  # consumes the RNG: the replay must not
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.drop(self.act(self.conv(x)))).flatten(1))


def make_module(base, fail_at=None):
    class Module(base):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyConv()
            self.losses = []

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            if fail_at is not None and self.global_step == fail_at:
                raise ValueError("boom")
            x, y = batch
            loss = nn.functional.cross_entropy(self(x), y)
            self.losses.append(loss.item())
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return Module()


def loader(n=64, batch=8):
    g = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))
    return torch.utils.data.DataLoader(ds, batch_size=batch)


def fit(tmp_path, callbacks, logger, lib=L, steps=STEPS, module=None, **trainer_kwargs):
    torch.manual_seed(0)
    module = module or make_module(lib.LightningModule)
    trainer = lib.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, callbacks=callbacks, logger=logger,
        default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, deterministic=True, **trainer_kwargs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|litlogger).*")
        trainer.fit(module, loader())
    return trainer, module


def assert_nothing_left(module):
    assert torch.autograd.profiler._is_profiler_enabled is False
    for sub in module.modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks, type(sub).__name__
        assert not sub._backward_hooks and not sub._backward_pre_hooks
    from torch.nn.modules import module as nn_module
    from torch.optim import optimizer as optim

    assert not nn_module._global_forward_hooks and not nn_module._global_forward_pre_hooks
    assert not optim._global_optimizer_pre_hooks and not optim._global_optimizer_post_hooks
    assert not torch._C._dispatch_tls_local_include_set().has(torch._C.DispatchKey.Python)


# ----------------------------------------------------------------------------- pure parts


def test_schedule_windows_and_validation():
    s = RooflineSchedule(wait=2, warmup=1, active=2, every_n_steps=10)
    assert [s.window_start(k) for k in range(3)] == [2, 12, 22]
    assert RooflineSchedule().window_start(1) is None  # default: once
    with pytest.raises(ValueError, match=r"every_n_steps=2.*>= warmup \+ active = 3"):
        RooflineSchedule(every_n_steps=2)
    with pytest.raises(ValueError, match=r"active=0.*int >= 1"):
        Roofline(active=0)
    with pytest.raises(ValueError, match="memory_model='bytes'"):
        Roofline(memory_model="bytes")


def test_report_scalars_and_rank_summary_by_hand():
    d = {"totals": {"efficiency": 0.5, "time_s": 0.004, "coverage": float("nan"),
                    "bound_time_share": {"compute": 0.25, "memory": 0.75}}}
    assert report_scalars(d) == {
        "roofline/efficiency_pct": 50.0, "roofline/step_time_s/measured": 0.004,
        "roofline/bound_time_share_pct/compute": 25.0, "roofline/bound_time_share_pct/memory": 75.0,
    }

    def rep(step, conv):
        return {"totals": {"time_s": step}, "modules": [{"name": "net.conv", "phase": "all", "time_s": conv}]}

    s = rank_summary([rep(2.0, 1.0), None, rep(4.0, 3.0)])
    # step times 2 and 4: mean 3, spread (4 - 2) / 3; conv 1 and 3: mean 2, spread (3 - 1) / 2 = 1
    assert s["world_size"] == 3 and s["missing_ranks"] == [1] and s["ranks"] == [0, 2]
    assert s["step_time_s_mean"] == 3.0 and s["step_time_s_max"] == 4.0
    assert s["straggler_spread"] == pytest.approx(2 / 3)
    (row,) = s["modules"]
    assert (row["time_s_mean"], row["time_s_min"], row["time_s_max"], row["spread"]) == (2.0, 1.0, 3.0, 1.0)
    # 2 ms of a 10 ms step in collectives -> 20 %; efficiency 0.5 -> 50 %; unknown bytes left out
    assert comm_scalars({"time_s": 0.002, "bus_bytes": None, "step_time_share": 0.2, "efficiency": 0.5}) == {
        "roofline/comm/time_s": 0.002, "roofline/comm/step_time_share_pct": 20.0, "roofline/comm/efficiency_pct": 50.0}
    with pytest.raises(ValueError, match="interconnect_bandwidth=0"):
        Roofline(interconnect_bandwidth=0)


# ----------------------------------------------------------------------------- TensorBoard


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tb")
    logger = L.loggers.TensorBoardLogger(str(tmp), name="runs", version="v0")
    callback = Roofline(roof=ROOF)
    trainer, module = fit(tmp, [callback], logger)
    return tmp, logger, callback, trainer, module


def _tensorboard_client(logdir):
    from tensorboard import default, program
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_ingester
    from werkzeug.test import Client

    from torch_roofline.tensorboard.plugin import RooflinePlugin

    loaders = default.get_plugins()
    if RooflinePlugin not in loaders:
        loaders = loaders + [RooflinePlugin]
    tb = program.TensorBoard(plugins=loaders)
    tb.configure(argv=["", "--logdir", logdir, "--samples_per_plugin", "roofline=0", "--reload_interval", "0",
                       "--reload_task", "blocking", "--load_fast", "false"])
    ingester = data_ingester.LocalDataIngester(tb.flags)
    ingester.start()
    app = application.TensorBoardWSGIApp(tb.flags, tb.plugin_loaders, ingester.data_provider,
                                         tb.assets_zip_provider, ingester.deprecated_multiplexer)
    return Client(app)


def test_tensorboard_logger_feeds_the_roofline_tab_and_scalars(tensorboard_run):
    pytest.importorskip("werkzeug")
    tmp, logger, callback, trainer, module = tensorboard_run
    client = _tensorboard_client(logger.log_dir)
    step = STEPS - 1  # window = steps 2, 3, 4; the report is logged after step 4 (global_step 5)
    runs = json.loads(client.get("/data/plugin/roofline/runs").get_data(as_text=True))
    assert runs == {".": {"roofline": [step]}}
    served = json.loads(client.get(f"/data/plugin/roofline/report?run=.&tag=roofline&step={step}").get_data(as_text=True))
    assert served["schema"] == "torch_roofline.report/1"
    assert served["model"] == type(module).__name__ and served["steps"] == 2
    # The conv's forward FLOPs against torch's own counter on the same input shape.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        nn.Conv2d(3, 8, 3, padding=1)(torch.randn(8, 3, 8, 8))
    conv = next(r for r in served["modules"] if r["name"] == "net.conv" and r["phase"] == "forward")
    assert conv["flops"] == counter.get_total_flops()  # 2*8*8*8*8*3*3*3 + bias
    assert conv["time_s"] is not None and conv["time_s"] > 0  # the Lightning closure is ranged: forward is forward
    tags = json.loads(client.get("/data/plugin/scalars/tags").get_data(as_text=True))["."]
    assert {"roofline/efficiency_pct", "roofline/coverage_pct", "roofline/step_time_s/measured"} <= set(tags)
    series = json.loads(client.get("/data/plugin/scalars/scalars?run=.&tag=roofline/step_time_s/measured")
                        .get_data(as_text=True))
    assert [point[1] for point in series] == [step]
    assert os.path.isfile(os.path.join(logger.log_dir, "roofline", f"step{step}", "report.json"))
    images = json.loads(client.get("/data/plugin/images/tags").get_data(as_text=True))
    assert "roofline/chart" in images["."]  # the chart, rendered once for the image and roofline.png
    assert len(callback.reports) == 1 and callback.state_dict() == {"windows_done": [2]}
    assert_nothing_left(module)


# ----------------------------------------------------------------------------- CSV, none


def test_csv_logger_gets_scalars_and_files(tmp_path):
    logger = L.loggers.CSVLogger(str(tmp_path), name="csv", version=0)
    trainer, module = fit(tmp_path, [Roofline(roof=ROOF, plot=False)], logger)
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r.get("roofline/step_time_s/measured")]
    assert len(rows) == 1 and rows[0]["step"] == str(STEPS - 1)
    assert float(rows[0]["roofline/step_time_s/measured"]) > 0
    report = json.load(open(os.path.join(logger.log_dir, "roofline", f"step{STEPS - 1}", "report.json")))
    assert report["totals"]["time_s"] == pytest.approx(float(rows[0]["roofline/step_time_s/measured"]))
    assert_nothing_left(module)


def test_no_logger_writes_files_and_warns_once(tmp_path):
    with pytest.warns(UserWarning, match="no logger") as record:
        fit(tmp_path, [Roofline(roof=ROOF, every_n_steps=4)], False, steps=9)  # windows at 2 and 6
    assert sum("no logger" in str(w.message) for w in record) == 1  # two windows, one warning
    found = sorted(os.path.relpath(p, tmp_path) for p in glob.glob(str(tmp_path / "roofline" / "*" / "*")))
    assert found == ["roofline/step5/report.json", "roofline/step5/roofline.png",
                     "roofline/step9/report.json", "roofline/step9/roofline.png"]


def test_export_trace_keeps_the_window_trace_next_to_the_report(tmp_path, monkeypatch):
    out = tmp_path / "out"
    # temporary files in a directory of this test's own: another run on the machine (a second
    # test session side by side) has its own temporary traces in the shared one
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    fit(tmp_path, [Roofline(roof=ROOF, plot=False, dirpath=str(out), export_trace=True)], False)
    trace = json.load(open(out / f"step{STEPS - 1}" / "trace.json"))
    # the exported Chrome trace holds the active steps' ProfilerStep ranges and the module ranges
    names = {e.get("name", "") for e in trace["traceEvents"]}
    assert any(n.startswith("ProfilerStep#") for n in names)
    assert any(n.startswith("roofline::") for n in names)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "roofline-trace-*.json"))  # temp copy removed


# ----------------------------------------------------------------------------- pytorch_lightning


def test_pytorch_lightning_namespace(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from torch_roofline.lightning import RooflinePL

    callback = RooflinePL(roof=ROOF, plot=False)
    assert isinstance(callback, pl.Callback) and not isinstance(callback, L.Callback)
    logger = pl.loggers.CSVLogger(str(tmp_path), name="pl", version=0)
    _, module = fit(tmp_path, [callback], logger, lib=pl, module=make_module(pl.LightningModule))
    assert len(callback.reports) == 1 and callback.reports[0].steps == 2
    assert os.path.isfile(os.path.join(logger.log_dir, "roofline", f"step{STEPS - 1}", "report.json"))
    assert_nothing_left(module)


# ----------------------------------------------------------------------------- guarantees


def test_training_is_unchanged(tmp_path):
    _, plain = fit(tmp_path / "a", [], False, steps=8)
    callback = Roofline(roof=ROOF, wait=1, plot=False)
    with pytest.warns(UserWarning, match="no logger"):
        _, profiled = fit(tmp_path / "b", [callback], False, steps=8)
    assert len(callback.reports) == 1  # the window (steps 1..3) ran inside these 8 steps
    assert plain.losses == profiled.losses  # bit-identical, dropout included
    for (name, a), (_, b) in zip(plain.state_dict().items(), profiled.state_dict().items()):
        assert torch.equal(a, b), name


def test_nothing_left_after_an_exception_in_the_window(tmp_path):
    callback = Roofline(roof=ROOF)
    module = make_module(L.LightningModule, fail_at=3)  # inside the window (steps 2..4)
    with pytest.raises(ValueError, match="boom"):
        fit(tmp_path, [callback], False, module=module)
    assert callback._window is None and callback.reports == []
    assert_nothing_left(module)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    callback = Roofline(roof=ROOF, wait=1, warmup=1, active=1, plot=False, dirpath=str(tmp_path / "out"))
    fit(tmp_path, [callback], False, steps=4, accumulate_grad_batches=2)
    (report,) = callback.reports
    assert report.steps == 1  # one optimizer step = two batches, both counted
    conv = report.module("net.conv", "forward")
    assert conv.calls == 2
    # Conv2d(3 -> 8, 3x3, pad 1) on (8, 3, 8, 8), twice: 2 * (2 * 8*8*8 * 8 * 3*3*3) = 2 * 221184
    assert conv.flops == 2 * 221_184


def test_resume_continues_the_schedule(tmp_path):
    done = Roofline(roof=ROOF)
    done.load_state_dict({"windows_done": [2]})  # as restored from a checkpoint taken after the window
    fit(tmp_path, [done], False)
    assert done.reports == [] and not os.path.exists(tmp_path / "roofline")


def test_bf16_mixed_counts_the_dtypes_the_ops_ran_in(tmp_path):
    callback = Roofline(roof=ROOF, plot=False, dirpath=str(tmp_path / "out"))
    fit(tmp_path, [callback], False, precision="bf16-mixed")
    (report,) = callback.reports
    # autocast runs convolution and linear in bfloat16 (torch's autocast op lists)
    dtypes = {row.op: row.dtype for row in report.ops if row.phase == "forward" and row.op in ("aten.convolution", "aten.addmm")}
    assert dtypes == {"aten.convolution": "bfloat16", "aten.addmm": "bfloat16"}


def test_missing_namespace_names_the_extra(monkeypatch):
    import sys

    import torch_roofline.lightning as module

    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # import fails as if not installed
    monkeypatch.delitem(module._CLASSES, "RooflinePL", raising=False)
    monkeypatch.delitem(vars(module), "RooflinePL", raising=False)
    with pytest.raises(ImportError, match=r"pip install torch_roofline\[lightning\]"):
        module.RooflinePL


# ----------------------------------------------------------------------------- validation, compile


def test_validation_is_off_by_default_and_profiled_separately_when_on(tmp_path):
    def run(callback, name):
        logger = L.loggers.CSVLogger(str(tmp_path), name=name, version=0)
        torch.manual_seed(0)
        trainer = L.Trainer(
            max_steps=STEPS, accelerator="cpu", devices=1, callbacks=[callback], logger=logger,
            default_root_dir=str(tmp_path), enable_progress_bar=False, enable_model_summary=False,
            enable_checkpointing=False, val_check_interval=STEPS - 1, limit_val_batches=4, num_sanity_val_steps=2,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec|litlogger|log_every).*")
            trainer.fit(make_module(L.LightningModule), loader(), loader(n=32, batch=4))
        return logger

    off = Roofline(roof=ROOF, plot=False)
    run(off, "off")
    assert len(off.reports) == 1 and off.val_reports == []
    on = Roofline(roof=ROOF, plot=False, validation=True)
    logger = run(on, "on")
    assert len(on.reports) == 1  # training unchanged
    (val,) = on.val_reports  # the sanity check is skipped; the run after step 5 is profiled
    assert val.steps == 2 and {row.phase for row in val.modules} <= {"forward", "all"}
    assert not [r for r in val.ops if r.phase in ("backward", "optimizer")]  # forward only
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        nn.Conv2d(3, 8, 3, padding=1)(torch.randn(4, 3, 8, 8))  # the validation batch is 4
    assert val.module("net.conv", "forward").flops == counter.get_total_flops()
    assert on.state_dict() == {"windows_done": [2], "val_windows_done": [STEPS - 1]}
    assert os.path.isfile(os.path.join(logger.log_dir, "roofline", "val", f"step{STEPS - 1}", "report.json"))
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        header = next(csv.reader(f))
    assert "roofline_val/step_time_s/measured" in header and "roofline/step_time_s/measured" in header


def test_torch_compile_warns_and_the_fit_finishes(tmp_path):
    class Compiled(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.compile(TinyConv(), backend="eager")  # dynamo without codegen: cheap

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = Roofline(roof=ROOF, plot=False, dirpath=str(tmp_path / "out"))
    module = Compiled()
    with pytest.warns(UserWarning, match=r"'net' run\(s\) under torch.compile"):
        trainer, _ = fit(tmp_path, [callback], False, module=module)
    assert trainer.global_step == STEPS and callback._window is None
    assert_nothing_left(module)
