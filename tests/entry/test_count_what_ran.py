"""Count what ran (issue 12): the profiler counts the ops the profiled steps really ran.

Oracles, for each step below, run on the same real step:

* torch's ``FlopCounterMode`` wrapped around the step: the matrix FLOPs (it counts mm, addmm,
  bmm, convolution and their backward, attention) must equal the report's matrix rows exactly;
* ``torch_roofline.count(step_fn)``: the dispatch-mode counter around the same step function,
  whose totals (FLOPs, and bytes of the counted ops) the report must equal.

Neither oracle reads the profiler's trace: they count by intercepting the step's dispatches,
the report counts from what torch.profiler recorded.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import torch_roofline
from torch_roofline import RooflineProfiler, schedule
from torch_roofline.devices import Device
from torch_roofline.records import OUTSIDE

FLAT = Device(name="flat-test-device", peak_flops={"fp32": 1e11, "fp64": 1e11}, bandwidth=1e10)
# What FlopCounterMode counts (torch.utils.flop_counter's registry), as our op rows name them.
MATRIX = {"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten.convolution", "aten.convolution_backward",
          "aten._scaled_dot_product_flash_attention_for_cpu",
          "aten._scaled_dot_product_flash_attention_for_cpu_backward"}


def _profile(models, step, **kwargs):
    step()  # warm-up outside the profiler (first-call costs), as a user would
    with RooflineProfiler(models, roof=FLAT, **kwargs) as prof:
        step()
    return prof.report()


def _matrix_flops(report):
    return sum(o.flops for o in report.ops if o.op in MATRIX and o.flops)


def _flop_counter(step):
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def _counted_bytes(result, leave_out=()):
    return sum(o.bytes_read + o.bytes_written for o in result.ops if o.counted and o.op not in leave_out)


def _same_as_oracles(report, step, modules=None):
    assert _matrix_flops(report) == _flop_counter(step)
    direct = torch_roofline.count(step, modules=modules)
    assert report.totals.flops == direct.total.flops
    assert report.totals.bytes_read + report.totals.bytes_written == _counted_bytes(direct)
    return direct


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))


X, Y = torch.randn(16, 32), torch.randint(0, 10, (16,))


def test_a_loss_outside_the_model():
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters())

    def step():
        opt.zero_grad()
        F.cross_entropy(model(X), Y).backward()
        opt.step()

    report = _profile(model, step)
    _same_as_oracles(report, step, model)
    # the loss is its own row, with its forward and backward work: log_softmax and nll_loss
    outside = {(o.op, o.phase) for o in report.ops if o.name == OUTSIDE}
    assert ("aten._log_softmax", "forward") in outside and ("aten.nll_loss_forward", "forward") in outside
    assert ("aten._log_softmax_backward_data", "backward") in outside
    # the root holds AdamW's ops and autograd's gradient accumulation (no forward op made them)
    root = {(o.phase, o.op) for o in report.ops if o.name == ""}
    assert {phase for phase, _ in root} == {"optimizer", "backward"}
    assert {op for phase, op in root if phase == "backward"} <= {"aten.detach", "aten.add_", "aten.add"}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "module.compile()"])
def test_b_lightning_readme_autoencoder(compiled, tmp_path):
    # With `lit.compile()` only `lit(x)` would run compiled; the README's training_step never
    # calls it, so its submodules run eagerly and keep their rows (issue 15, build point 4).
    L = pytest.importorskip("lightning.pytorch")
    from torch_roofline.lightning import Roofline

    class LitAutoEncoder(L.LightningModule):  # Lightning's README example, as written there
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(28 * 28, 128), nn.ReLU(), nn.Linear(128, 3))
            self.decoder = nn.Sequential(nn.Linear(3, 128), nn.ReLU(), nn.Linear(128, 28 * 28))

        def forward(self, x):
            return self.encoder(x)

        def training_step(self, batch, batch_idx):
            x, _ = batch
            x = x.view(x.size(0), -1)
            z = self.encoder(x)
            x_hat = self.decoder(z)
            loss = F.mse_loss(x_hat, x)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(64, 1, 28, 28), torch.zeros(64))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    lit = LitAutoEncoder()
    if compiled:
        lit.compile()
    callback = Roofline(roof=FLAT, wait=1, warmup=1, active=1, plot=False, dirpath=str(tmp_path / "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = L.Trainer(max_steps=4, callbacks=[callback], logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=str(tmp_path))
        trainer.fit(lit, loader)
    (report,) = callback.reports

    # Oracle: FlopCounterMode around the same training step on an identical module and batch.
    twin = LitAutoEncoder()
    twin.load_state_dict(lit.state_dict())
    batch = next(iter(loader))
    opt = torch.optim.Adam(twin.parameters(), lr=1e-3)

    def step():
        x = batch[0].view(8, -1)
        F.mse_loss(twin.decoder(twin.encoder(x)), x).backward()
        opt.step()
        opt.zero_grad()

    assert _matrix_flops(report) == _flop_counter(step)
    names = {m.name for m in report.modules if m.flops}
    assert {"encoder", "encoder.0", "decoder", "decoder.2", OUTSIDE} <= names  # submodules called directly
    assert report.module("encoder", "forward").calls == 1 and report.module("decoder", "backward").flops > 0
    assert report.module("encoder.0", "forward").type == "Linear"  # ran eagerly: not "(in compiled code)"


def test_c_model_called_twice():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        (model(X) - model(X * 2)).pow(2).mean().backward()
        opt.step()

    report = _profile(model, step)
    _same_as_oracles(report, step, model)
    assert report.module("0", "forward").calls == 2


def test_d_micro_batches():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        for i in range(4):
            F.cross_entropy(model(X[i * 4:(i + 1) * 4]), Y[i * 4:(i + 1) * 4]).backward()
        opt.step()

    report = _profile(model, step)
    _same_as_oracles(report, step, model)
    assert report.module("0", "forward").calls == 4
    # 4 micro-batches of 4 rows are the work of one batch of 16: Linear(32, 64) forward,
    # 2 * 16 * 32 * 64 = 65536
    assert report.module("0", "forward").flops == 65536


def test_d_lightning_accumulate_grad_batches(tmp_path):
    L = pytest.importorskip("lightning.pytorch")
    from torch_roofline.lightning import Roofline

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(96, 32), torch.randint(0, 10, (96,)))
    callback = Roofline(roof=FLAT, wait=1, warmup=1, active=1, plot=False, dirpath=str(tmp_path / "out"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L.Trainer(max_steps=4, accumulate_grad_batches=4, callbacks=[callback], logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=str(tmp_path)).fit(Lit(), torch.utils.data.DataLoader(data, batch_size=4))
    (report,) = callback.reports
    twin = _mlp()

    def micro_batches():
        for i in range(4):
            F.cross_entropy(twin(X[i * 4:(i + 1) * 4]), Y[i * 4:(i + 1) * 4]).backward()

    assert report.module("net.0", "forward").calls == 4
    assert _matrix_flops(report) == _flop_counter(micro_batches)


def test_e_activation_checkpointing_recompute():
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
    head = nn.Linear(32, 10)
    models = nn.ModuleDict({"block": block, "head": head})

    def step():
        F.cross_entropy(head(checkpoint(block, X, use_reentrant=False)), Y).backward()

    report = _profile(models, step)
    _same_as_oracles(report, step, models)
    # The recompute runs block.0 (and GELU) again in backward, marked as such; it stops before
    # block.2's matmul (checkpointing's early stop), which is counted as no work.
    recompute = [o for o in report.ops if o.recompute_calls]
    assert {(o.name, o.op) for o in recompute if o.flops} >= {("block.0", "aten.addmm")}
    assert all(o.phase == "backward" for o in recompute)
    row = next(o for o in recompute if o.name == "block.0" and o.op == "aten.addmm")
    assert row.flops == 2 * 16 * 32 * 64  # Linear(32, 64) on 16 rows, recomputed once


def test_f_gan_two_models_two_optimizers():
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
    disc = nn.Sequential(nn.Linear(16, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    opt_g, opt_d = torch.optim.Adam(gen.parameters()), torch.optim.Adam(disc.parameters())
    z, real = torch.randn(16, 8), torch.randn(16, 16)
    ones, zeros = torch.ones(16, 1), torch.zeros(16, 1)

    def step():
        opt_d.zero_grad()
        fake = gen(z)
        loss_d = F.binary_cross_entropy_with_logits(disc(real), ones) + \
            F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        F.binary_cross_entropy_with_logits(disc(fake), ones).backward()
        opt_g.step()

    report = _profile({"generator": gen, "discriminator": disc}, step)
    _same_as_oracles(report, step)
    assert report.model == "step"
    assert report.module("discriminator", "forward").calls == 3
    assert report.module("generator", "forward").calls == 1
    assert report.module("", "optimizer").calls == 2


def test_g_keyword_argument_model():
    class KeywordModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            self.head = nn.Linear(32, 2)

        def forward(self, input_ids=None, attention_mask=None):
            hidden = self.embed(input_ids) * attention_mask[..., None]
            return self.head(hidden.mean(1))

    model = KeywordModel()
    batch = {"input_ids": torch.randint(0, 100, (4, 7)), "attention_mask": torch.ones(4, 7)}

    def step():
        model(**batch).sum().backward()

    report = _profile(model, step)
    _same_as_oracles(report, step, model)
    assert report.module("embed", "forward").calls == 1


def test_h_inference_mode():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)

    def step():
        with torch.inference_mode():
            model(x)

    def same_under_no_grad():
        with torch.no_grad():
            model(x)

    report = _profile(model, step)
    assert _matrix_flops(report) == _flop_counter(step)  # FlopCounterMode decomposes under inference_mode
    # count() of the same computation (under no_grad: the same ops reach the kernels)
    direct = torch_roofline.count(same_under_no_grad, modules=model)
    assert report.totals.flops == direct.total.flops
    assert report.totals.bytes_read + report.totals.bytes_written == _counted_bytes(direct)
    assert report.uncounted == ()


def test_i_detection_model_with_data_dependent_ops():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None).eval()
    images = [torch.rand(3, 160, 192)]

    def step():
        with torch.no_grad():
            model(images)

    report = _profile(model, step)
    assert _matrix_flops(report) == _flop_counter(step)
    direct = torch_roofline.count(step, modules=model)
    assert report.totals.flops == direct.total.flops
    # nonzero, nms, boolean indexing ran once (no second run); the ops count() can count are
    # counted here too, from their recorded inputs and the outputs the profiler saw allocated.
    # torch.profiler records no List[Optional[Tensor]] argument: `index`'s index tensors are
    # missing from its bytes (said in a note: a few kB of ~400 MB here), and an `index_put_`
    # whose indices are unknown is listed uncounted with that reason, never costed as another
    # write. nms's output bytes are the block it allocated (its kept indices are a view of it).
    uncounted = {u.op for u in report.uncounted}
    assert uncounted <= {"aten.index_put_"}
    ours = report.totals.bytes_read + report.totals.bytes_written
    theirs = _counted_bytes(direct, leave_out=uncounted)
    assert abs(ours - theirs) <= 1e-3 * theirs
    assert any("'indices' argument, which torch.profiler does not record" in n for n in report.notes)


def test_dynamic_shapes_each_step_counted_with_its_own_shapes():
    model = _mlp()
    batches = [torch.randn(n, 32) for n in (8, 16, 24)]
    prof = RooflineProfiler(model, roof=FLAT, schedule=schedule(wait=0, warmup=0, active=3))
    with torch.no_grad(), prof:
        for x in batches:
            model(x)
            prof.step()
    report = prof.report()
    # per-step average of the three steps' Linear(32, 64) work: 2 * n * 32 * 64 for n = 8, 16, 24
    assert report.module("0", "forward").flops == round(sum(2 * n * 32 * 64 for n in (8, 16, 24)) / 3)
    assert any("averaged over the steps" in n for n in report.notes)


def test_no_model_gives_op_rows_and_the_root_only():
    model = _mlp()

    def step():
        model(X).sum().backward()

    report = _profile(None, step)
    _same_as_oracles(report, step)
    assert {m.name for m in report.modules} == {""} and report.model == "step"


def test_submodules_called_directly_and_the_model_never():
    model = _mlp()

    def step():
        h = model[1](model[0](X))  # the root never runs
        model[2](h).sum().backward()

    report = _profile(model, step)
    _same_as_oracles(report, step, model)
    assert report.module("0", "forward").calls == 1 and report.module("2", "backward").flops > 0


def test_second_with_block_reports_its_own_steps():
    model = _mlp()
    prof = RooflineProfiler(model, roof=FLAT)
    with torch.no_grad():
        with prof:
            model(torch.randn(2, 32))
        first = prof.report().totals.flops
        with prof:
            model(torch.randn(64, 32))
        second = prof.report().totals.flops
    assert second == 32 * first  # batch 64 against batch 2: every op scales with the batch here


def test_training_unchanged_by_profiling():
    def run(profiled):
        model = _mlp(seed=3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for i in range(3):
            def step():
                opt.zero_grad()
                loss = F.cross_entropy(model(X), Y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            if profiled and i == 1:
                with RooflineProfiler(model, roof=FLAT) as prof:
                    step()
                prof.report()
            else:
                step()
        return losses, [p.detach().clone() for p in model.parameters()]

    plain, profiled = run(False), run(True)
    assert plain[0] == profiled[0]
    assert all(torch.equal(a, b) for a, b in zip(plain[1], profiled[1]))
