"""The model zoo counted by tests/test_zoo.py: torchvision, timm and Hugging Face transformers.

Every entry builds a model with random weights (nothing is downloaded: every torchvision
builder gets ``weights=None`` and ``weights_backbone=None``, timm ``pretrained=False``,
transformers a small config) and the inputs of one step. Models that can run on the meta
device are built and counted there (no memory, no arithmetic); the others (detection
models: their post-processing needs real boxes; transformers: their mask helpers read
values) are built small and counted on small real CPU inputs.

Run directly to print the whole zoo's result: ``python tests/_zoo.py [name-filter]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class ZooModel:
    """One model of the zoo.

    Attributes:
        name: ``"<library>.<model>"``.
        build: returns the model (on ``device``), in eval mode.
        inputs: returns the forward's inputs (on ``device``).
        device: ``"meta"`` or ``"cpu"``.
        train: returns (inputs, loss_fn) of a training step, or None when the zoo counts
            no training step for this model.
        sample: counted by the default (CI) run; the full zoo (``TORCH_ROOFLINE_FULL_ZOO=1``)
            counts every model.
        sample_train: the default run counts its training step too (the full zoo counts
            every ``train``).
        fvcore: compare per-module Conv/Linear FLOPs with fvcore's (real CPU inputs).
        fvcore_input: the CPU input fvcore traces (small, to keep the trace cheap).
    """

    name: str
    build: Callable[[str], nn.Module]
    inputs: Callable[[str], Any]
    device: str = "meta"
    train: Optional[Callable[[str, nn.Module], Tuple[Any, Optional[Callable[[Any], torch.Tensor]]]]] = None
    sample: bool = False
    sample_train: bool = False
    fvcore: bool = False
    fvcore_input: Optional[Tuple[int, ...]] = None


def _image(shape: Tuple[int, ...]) -> Callable[[str], torch.Tensor]:
    def make(device: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(*shape, generator=g)
        return x.to(device) if device != "meta" else torch.empty(*shape, device="meta")

    return make


def _on(device: str) -> Any:
    return torch.device(device) if device == "meta" else contextlib.nullcontext()


# --------------------------------------------------------------------------------------
# torchvision
# --------------------------------------------------------------------------------------
# The CI sample: each task and architecture family once (the full zoo: every model).
_TV_SAMPLE = {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t",
              "regnet_x_400mf", "maxvit_t", "inception_v3", "shufflenet_v2_x0_5", "squeezenet1_0",
              "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50",
              "fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "r3d_18", "s3d", "raft_small"}
_TV_TRAIN = {"resnet18", "efficientnet_b0", "vit_b_16", "convnext_tiny", "mobilenet_v3_small", "swin_t",
             "fcn_resnet50", "maskrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn",
             "keypointrcnn_resnet50_fpn", "raft_small", "r3d_18", "mvit_v2_s"}
_TV_SAMPLE_TRAIN = {"resnet18", "vit_b_16", "fcn_resnet50", "fasterrcnn_mobilenet_v3_large_320_fpn", "r3d_18"}
_TV_FVCORE = {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_x_400mf",
              "shufflenet_v2_x0_5", "densenet121", "squeezenet1_0", "inception_v3", "resnext50_32x4d",
              "mnasnet0_5", "vgg11", "alexnet", "googlenet", "wide_resnet50_2", "efficientnet_v2_s"}
_TV_SAMPLE_FVCORE = {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "squeezenet1_0"}


@contextlib.contextmanager
def _regnet_widths_on_cpu() -> Any:
    """torchvision's RegNet builders compute their widths with tensors and read them back
    (``.tolist()``): under ``torch.device("meta")`` there is nothing to read, so that small
    computation runs on the CPU while the layers are built on meta."""
    from torchvision.models import regnet

    original = regnet.BlockParams.from_init_params

    def on_cpu(*args: Any, **kwargs: Any) -> Any:
        with torch.device("cpu"):
            return original(*args, **kwargs)

    regnet.BlockParams.from_init_params = on_cpu
    try:
        yield
    finally:
        regnet.BlockParams.from_init_params = original


def _tv_builder(module: Any, name: str, **kw: Any) -> Callable[[str], nn.Module]:
    def build(device: str) -> nn.Module:
        torch.manual_seed(0)
        with _on(device), (_regnet_widths_on_cpu() if name.startswith("regnet") else contextlib.nullcontext()):
            return getattr(module, name)(**kw).eval()

    return build


def _sum_outputs(out: Any) -> torch.Tensor:
    """A differentiable scalar from any output: the sum of every floating tensor in it."""
    from torch.utils._pytree import tree_flatten

    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor) and t.is_floating_point()
              and t.requires_grad]
    total = leaves[0].sum()
    for t in leaves[1:]:
        total = total + t.sum()
    return total


def _detection_targets(name: str, n_images: int, size: int) -> List[Dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(n_images):
        boxes = torch.tensor([[8.0, 10.0, 60.0, 70.0], [30.0, 20.0, 90.0, 90.0]])
        # keypoint R-CNN has 2 classes (background, person)
        t = {"boxes": boxes, "labels": torch.tensor([1, 1] if "keypoint" in name else [1, 2])}
        if "mask" in name:
            t["masks"] = (torch.rand(2, size, size, generator=g) > 0.5).to(torch.uint8)
        if "keypoint" in name:
            kp = torch.rand(2, 17, 3, generator=g) * 50 + 10
            kp[..., 2] = 1
            t["keypoints"] = kp
        targets.append(t)
    return targets


def _torchvision() -> List[ZooModel]:
    import torchvision.models as tvm
    from torchvision.models import detection, optical_flow, segmentation, video

    zoo: List[ZooModel] = []
    for name in tvm.list_models(module=tvm):
        size = 299 if name == "inception_v3" else 224
        kw: Dict[str, Any] = {"weights": None}
        if name == "inception_v3":
            kw["init_weights"] = False  # scipy-free init; aux logits are training-only outputs
        zoo.append(ZooModel(
            f"torchvision.{name}", _tv_builder(tvm, name, **kw), _image((1, 3, size, size)),
            train=(lambda device, model, size=size: (_image((2, 3, size, size))(device), _sum_outputs))
            if name in _TV_TRAIN else None,
            sample=name in _TV_SAMPLE, sample_train=name in _TV_SAMPLE_TRAIN,
            fvcore=name in _TV_FVCORE and (name in _TV_SAMPLE_FVCORE or full_zoo_requested()),
            fvcore_input=(1, 3, 75, 75) if name == "inception_v3" else (1, 3, 64, 64)))
    for name in tvm.list_models(module=segmentation):
        zoo.append(ZooModel(
            f"torchvision.{name}", _tv_builder(segmentation, name, weights=None, weights_backbone=None),
            _image((1, 3, 224, 224)),
            train=(lambda device, model: (_image((2, 3, 224, 224))(device), lambda out: out["out"].sum()))
            if name in _TV_TRAIN else None,
            sample=name in _TV_SAMPLE, sample_train=name in _TV_SAMPLE_TRAIN))
    small = dict(weights=None, weights_backbone=None, min_size=96, max_size=96, rpn_pre_nms_top_n_test=64,
                 rpn_post_nms_top_n_test=32, rpn_pre_nms_top_n_train=64, rpn_post_nms_top_n_train=32,
                 box_batch_size_per_image=16, box_detections_per_img=4)
    for name in tvm.list_models(module=detection):
        kw = dict(weights=None, weights_backbone=None)
        if "rcnn" in name:
            kw = dict(small)
        elif name.startswith(("retinanet", "fcos")):
            kw.update(min_size=96, max_size=96, topk_candidates=32, detections_per_img=4)
        elif name.startswith("ssd"):
            kw.update(topk_candidates=50, detections_per_img=10)
        img = 96 if not name.startswith("ssd") else 160

        def inputs(device: str, img: int = img) -> Tuple[List[torch.Tensor]]:
            g = torch.Generator().manual_seed(0)
            return ([torch.rand(3, img, img, generator=g)],)

        def train(device: str, model: nn.Module, name: str = name, img: int = img) -> Tuple[Any, Any]:
            model.train()
            g = torch.Generator().manual_seed(0)
            images = [torch.rand(3, img, img, generator=g)]
            return (images, _detection_targets(name, 1, img)), lambda losses: sum(losses.values())

        zoo.append(ZooModel(f"torchvision.{name}", _tv_builder(detection, name, **kw), inputs, device="cpu",
                            train=train if name in _TV_TRAIN else None, sample=name in _TV_SAMPLE,
                            sample_train=name in _TV_SAMPLE_TRAIN))
    for name in tvm.list_models(module=video):
        frames, size = (16, 224) if name.startswith(("mvit", "s3d", "swin3d")) else (8, 112)
        zoo.append(ZooModel(
            f"torchvision.{name}", _tv_builder(video, name, weights=None), _image((1, 3, frames, size, size)),
            train=(lambda device, model, f=frames, s=size: (_image((1, 3, f, s, s))(device), _sum_outputs))
            if name in _TV_TRAIN else None,
            sample=name in _TV_SAMPLE, sample_train=name in _TV_SAMPLE_TRAIN))
    for name in tvm.list_models(module=optical_flow):
        def flow_inputs(device: str) -> Dict[str, Any]:
            # 128x128 frames (the smallest the correlation pyramid takes) and 4 refinement steps
            return {"image1": _image((1, 3, 128, 128))(device), "image2": _image((1, 3, 128, 128))(device),
                    "num_flow_updates": 4}

        zoo.append(ZooModel(
            f"torchvision.{name}", _tv_builder(optical_flow, name, weights=None), flow_inputs,
            train=(lambda device, model: (flow_inputs(device), lambda flows: flows[-1].sum()))
            if name in _TV_TRAIN else None,
            sample=name in _TV_SAMPLE, sample_train=name in _TV_SAMPLE_TRAIN))
    return zoo


# --------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------
_TIMM = {
    # family: (models, sampled model, input size)
    "vit": (["vit_tiny_patch16_224", "vit_base_patch16_224"], "vit_tiny_patch16_224"),
    "deit": (["deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"], "deit_tiny_distilled_patch16_224"),
    "convnext": (["convnext_atto", "convnext_tiny"], "convnext_atto"),
    "efficientnet": (["efficientnet_b0", "tf_efficientnet_b0", "efficientnetv2_rw_t"], "tf_efficientnet_b0"),
    "resnet-d": (["resnet26d", "resnet50d"], "resnet26d"),
    "regnet": (["regnetx_002", "regnety_002"], "regnety_002"),
    "swin": (["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256"], "swin_tiny_patch4_window7_224"),
    "maxvit": (["maxvit_tiny_tf_224", "maxvit_rmlp_nano_rw_256"], "maxvit_tiny_tf_224"),
}
_TIMM_TRAIN = {"deit_tiny_distilled_patch16_224", "regnety_002", "convnext_atto"}
_TIMM_SAMPLE_TRAIN = {"deit_tiny_distilled_patch16_224"}


def _timm() -> List[ZooModel]:
    if importlib.util.find_spec("timm") is None:
        return []
    zoo = []
    for family, (names, sampled) in _TIMM.items():
        for name in names:
            def build(device: str, name: str = name) -> nn.Module:
                import timm

                torch.manual_seed(0)
                with _on(device):
                    return timm.create_model(name, pretrained=False).eval()

            size = 256 if name.endswith("256") else 224
            zoo.append(ZooModel(
                f"timm.{name}", build, _image((1, 3, size, size)),
                train=(lambda device, model, size=size: (_image((2, 3, size, size))(device), _sum_outputs))
                if name in _TIMM_TRAIN else None,
                sample=name == sampled, sample_train=name in _TIMM_SAMPLE_TRAIN))
    return zoo


# --------------------------------------------------------------------------------------
# Hugging Face transformers: small configs, random weights, real CPU inputs.
# --------------------------------------------------------------------------------------
_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)


def _ids(batch: int, length: int, vocab: int = 1000) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))


def _hf_models() -> Dict[str, Tuple[Callable[[], nn.Module], Callable[[], Any]]]:
    import transformers as tf

    def vision_config(cls: Any) -> Any:
        return cls(**_SMALL, image_size=32, patch_size=8)

    return {
        "gpt2": (lambda: tf.GPT2LMHeadModel(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64,
                                                          vocab_size=1000, bos_token_id=1, eos_token_id=2)),
                 lambda: {"input_ids": _ids(2, 16)}),
        "llama": (lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**_SMALL, num_key_value_heads=2, vocab_size=1000,
                                                             max_position_embeddings=64)),
                  lambda: {"input_ids": _ids(2, 16)}),
        "bert": (lambda: tf.BertForMaskedLM(tf.BertConfig(**_SMALL, vocab_size=1000, max_position_embeddings=64)),
                 lambda: {"input_ids": _ids(2, 16), "attention_mask": torch.ones(2, 16, dtype=torch.long)}),
        "t5": (lambda: tf.T5ForConditionalGeneration(tf.T5Config(d_model=64, d_ff=128, d_kv=16, num_layers=2,
                                                                 num_heads=4, vocab_size=1000)),
               lambda: {"input_ids": _ids(2, 16), "decoder_input_ids": _ids(2, 8)}),
        "whisper": (lambda: tf.WhisperForConditionalGeneration(tf.WhisperConfig(
                        d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                        max_source_positions=32, max_target_positions=32, vocab_size=1000, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
                    lambda: {"input_features": torch.randn(1, 80, 64, generator=torch.Generator().manual_seed(0)),
                             "decoder_input_ids": _ids(1, 8)}),
        "vit": (lambda: tf.ViTForImageClassification(vision_config(tf.ViTConfig)),
                lambda: {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}),
        "clip": (lambda: tf.CLIPModel(tf.CLIPConfig(
                     text_config=dict(_SMALL, vocab_size=1000, max_position_embeddings=32, bos_token_id=1,
                                      eos_token_id=2, pad_token_id=0),
                     vision_config=dict(_SMALL, image_size=32, patch_size=8), projection_dim=32)),
                 lambda: {"input_ids": _ids(2, 8),
                          "pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}),
    }


_HF_SAMPLE = {"gpt2", "llama", "bert", "t5", "whisper", "vit", "clip"}
_HF_TRAIN = {"gpt2", "llama", "bert"}
_HF_SAMPLE_TRAIN = {"llama"}


def _transformers() -> List[ZooModel]:
    if importlib.util.find_spec("transformers") is None:
        return []
    zoo = []
    for name in ("gpt2", "llama", "bert", "t5", "whisper", "vit", "clip"):
        def build(device: str, name: str = name) -> nn.Module:
            torch.manual_seed(0)
            return _hf_models()[name][0]().eval()

        def inputs(device: str, name: str = name) -> Any:
            return _hf_models()[name][1]()

        def train(device: str, model: nn.Module, name: str = name) -> Tuple[Any, Any]:
            model.train()
            batch = dict(_hf_models()[name][1]())
            batch["labels"] = batch["input_ids"]
            return batch, None  # the model returns its loss (out.loss)

        zoo.append(ZooModel(f"transformers.{name}", build, inputs, device="cpu",
                            train=train if name in _HF_TRAIN else None, sample=name in _HF_SAMPLE,
                            sample_train=name in _HF_SAMPLE_TRAIN))
    return zoo


def zoo() -> List[ZooModel]:
    """Every model of the zoo, torchvision first."""
    return _torchvision() + _timm() + _transformers()


def full_zoo_requested() -> bool:
    """``TORCH_ROOFLINE_FULL_ZOO=1`` asks for the whole zoo instead of the CI sample."""
    return os.environ.get("TORCH_ROOFLINE_FULL_ZOO", "") not in ("", "0")


# --------------------------------------------------------------------------------------
# Counting one model.
# --------------------------------------------------------------------------------------
@dataclass
class ZooResult:
    name: str
    device: str
    flops: int = 0
    uncounted: Dict[str, int] = field(default_factory=dict)
    reasons: Dict[str, str] = field(default_factory=dict)
    train_flops: Optional[int] = None
    train_uncounted: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None


def count_forward(spec: ZooModel) -> Tuple[nn.Module, Any, Any]:
    """(model, inputs, CountResult) of one forward, in eval mode."""
    from torch_roofline import count

    model = spec.build(spec.device)
    inputs = spec.inputs(spec.device)
    return model, inputs, count(model, inputs)


def count_training_step(spec: ZooModel, model: nn.Module) -> Any:
    """CountResult of one training step (forward + backward) of an already-built model."""
    from torch_roofline import count

    if spec.train is None:
        raise ValueError(f"{spec.name}: no training step in the zoo")
    model.train()
    inputs, loss_fn = spec.train(spec.device, model)
    return count(model, inputs, backward=True, loss_fn=loss_fn)


def run(spec: ZooModel, train: bool = True) -> ZooResult:
    """Count one model (and its training step when it has one); never raises."""
    res = ZooResult(spec.name, spec.device)
    start = time.perf_counter()
    try:
        model, _, r = count_forward(spec)
        res.flops, res.uncounted, res.reasons = r.total.flops, r.uncounted, dict(r.uncounted_reasons)
        if train and spec.train is not None:
            t = count_training_step(spec, model)
            res.train_flops, res.train_uncounted = t.total.flops, t.uncounted
            res.reasons.update(t.uncounted_reasons)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: a sweep shows every model
        res.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    res.seconds = time.perf_counter() - start
    return res


if __name__ == "__main__":
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    total_start = time.perf_counter()
    for spec in zoo():
        if pattern not in spec.name:
            continue
        r = run(spec)
        status = "OK " if not (r.uncounted or r.train_uncounted or r.error) else "BAD"
        print(f"{status} {r.name:55s} {r.device:4s} {r.seconds:6.2f}s fwd {r.flops / 1e9:9.3f} GFLOP"
              + (f" train {r.train_flops / 1e9:9.3f}" if r.train_flops is not None else "")
              + (f" uncounted {r.uncounted}" if r.uncounted else "")
              + (f" train-uncounted {r.train_uncounted}" if r.train_uncounted else "")
              + (f" reasons {r.reasons}" if r.reasons else "")
              + (f" ERROR {r.error}" if r.error else ""), flush=True)
    print(f"total {time.perf_counter() - total_start:.1f}s")
