"""Vision models from torchvision (random weights), classification with cross-entropy."""

from __future__ import annotations

from model_bench.zoo import ZooModel


class TorchvisionModel(ZooModel):
    """``torchvision.models.<builder>(weights=None, **kwargs)`` on ``image`` inputs."""

    def __init__(self, name: str, builder: str, *, image: tuple[int, ...] = (3, 224, 224), classes: int = 1000,
                 module: str = "torchvision.models", kwargs: dict | None = None, note: str = ""):
        self.name = name
        self.builder = builder
        self.image = image
        self.classes = classes
        self.module = module
        self.kwargs = kwargs or {}
        shape = "x".join(map(str, image))
        self.description = f"torchvision {builder}, input {shape}, {classes} classes{note}"

    def warm_up(self) -> None:
        import importlib

        importlib.import_module(self.module)

    def make_model(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.builder)(weights=None, **self.kwargs)

    def make_batch(self, batch_size: int):
        import torch

        x = torch.randn(batch_size, *self.image)
        y = torch.randint(0, self.classes, (batch_size,))
        return (x,), y


# Auxiliary classifiers are off: they only matter for training from scratch and
# would make the loss a weighted sum that differs between papers.
_NO_AUX = {"aux_logits": False, "init_weights": True}

VISION_MODELS = [
    TorchvisionModel("alexnet", "alexnet"),
    TorchvisionModel("vgg11", "vgg11"),
    TorchvisionModel("vgg16", "vgg16"),
    TorchvisionModel("vgg19", "vgg19"),
    TorchvisionModel("resnet18", "resnet18"),
    TorchvisionModel("resnet50", "resnet50"),
    TorchvisionModel("mobilenet_v2", "mobilenet_v2"),
    TorchvisionModel("mnasnet0_5", "mnasnet0_5"),
    TorchvisionModel("squeezenet1_0", "squeezenet1_0"),
    TorchvisionModel("googlenet", "googlenet", kwargs=_NO_AUX, note=", no auxiliary heads"),
    TorchvisionModel("inception_v3", "inception_v3", image=(3, 299, 299), kwargs=_NO_AUX,
                     note=", no auxiliary head"),
    TorchvisionModel("efficientnet_b0", "efficientnet_b0"),
    TorchvisionModel("vit_b_16", "vit_b_16"),
    TorchvisionModel("r3d_18", "r3d_18", image=(3, 16, 112, 112), classes=400,
                     module="torchvision.models.video", note=" (16-frame clips, Kinetics-400)"),
]
