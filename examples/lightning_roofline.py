"""Roofline of a Lightning training step, in TensorBoard: a complete script to copy.

Trains a tiny convnet on random data with the ``Roofline`` callback and a
TensorBoardLogger writing to ``./runs``. The callback skips 2 steps, profiles 1 warm-up
and 2 recorded steps (and, with ``validation=True``, the first 3 batches of the first
validation run after step 2, tag ``roofline_val``), and logs each report at the trainer's
global step: scalars under ``roofline/``, a text summary, the roofline chart, and the
Roofline tab's data; the same
report is saved as ``runs/roofline_demo/version_*/roofline/step<N>/report.json``.

Run::

    python examples/lightning_roofline.py
    tensorboard --logdir runs --samples_per_plugin=roofline=0

(``pip install torch_roofline[lightning]`` for Lightning and TensorBoard.)
"""

import torch
from torch import nn

import lightning.pytorch as L
from lightning.pytorch.loggers import TensorBoardLogger

from torch_roofline.lightning import Roofline  # for `pytorch_lightning`, use RooflinePL


class TinyConvNet(L.LightningModule):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            nn.Flatten(), nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)  # call self(x): the callback counts forward
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def main() -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(512, 3, 32, 32), torch.randint(0, 10, (512,)))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(256)), batch_size=64)
    # Once, after 2 steps; every_n_steps=N to repeat. validation=True also profiles the first
    # validation run (forward only, tag "roofline_val"). Under DDP, pass interconnect_bandwidth=
    # (B/s per direction) to place the gradient all_reduce on your link's roof.
    roofline = Roofline(wait=2, warmup=1, active=2, validation=True)
    trainer = L.Trainer(
        max_steps=20,
        accelerator="auto",
        callbacks=[roofline],
        logger=TensorBoardLogger("runs", name="roofline_demo"),
        log_every_n_steps=5,
        check_val_every_n_epoch=1,
        enable_checkpointing=False,
    )
    trainer.fit(TinyConvNet(), loader, val_loader)
    if trainer.is_global_zero and roofline.reports:
        print(roofline.reports[-1].table(depth=2))
        if roofline.val_reports:
            print("\nValidation (forward only):\n" + roofline.val_reports[-1].table(depth=2))
        print("\nFiles:", *roofline.files, sep="\n  ")
        print("\nSee it in TensorBoard:  tensorboard --logdir runs --samples_per_plugin=roofline=0")


if __name__ == "__main__":
    main()
