"""torchvision's model definitions, the external reference for `layerlab import`.

The PyPI torchvision wheel's C extension does not load with the CPU torch of these machines
(shared/measurements.md); its model definitions are pure Python and import once an empty
module stands in for `torchvision._meta_registrations`, which registers the C ops' shapes.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def models() -> Any:
    """`torchvision.models`, imported without its C extension."""
    name = "torchvision._meta_registrations"
    sys.modules.setdefault(name, types.ModuleType(name))
    import torchvision.models

    return torchvision.models


def _vit() -> nn.Module:
    models()  # torchvision without its C extension first
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                             hidden_dim=32, mlp_dim=64, num_classes=10)


def _resnet(groups: int, width: int) -> nn.Module:
    """ResNeXt and Wide-ResNet are torchvision's ResNet with grouped or wider bottlenecks;
    one block per stage keeps the test fast."""
    models()  # torchvision without its C extension first
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], groups=groups, width_per_group=width,
                  num_classes=10)


def _densenet() -> nn.Module:
    models()  # torchvision without its C extension first
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, num_classes=10)


def _narrow_head(model: nn.Module, width: int = 64) -> nn.Module:
    """VGG's and AlexNet's classifiers hold 100M and 55M weights (4096-wide Linear layers),
    which would take most of the tests' time to draw at random; the same Sequential with
    `width`-wide Linear layers runs the same forward code."""
    layers = list(model.classifier)
    linears = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    fan_in = layers[linears[0]].in_features
    for i in linears:
        out = layers[i].out_features if i == linears[-1] else width
        layers[i] = nn.Linear(fan_in, out)
        fan_in = out
    model.classifier = nn.Sequential(*layers)
    return model


# family → (how to build a small member for 10 classes, input shape)
FAMILIES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet": (lambda: models().resnet18(num_classes=10), (3, 32, 32)),
    "resnext": (lambda: _resnet(32, 4), (3, 32, 32)),
    "wide_resnet": (lambda: _resnet(1, 128), (3, 32, 32)),
    "vgg_bn": (lambda: _narrow_head(models().vgg11_bn(num_classes=10, init_weights=False)),
               (3, 32, 32)),
    "alexnet": (lambda: _narrow_head(models().alexnet(num_classes=10)), (3, 64, 64)),
    "squeezenet": (lambda: models().squeezenet1_1(num_classes=10), (3, 64, 64)),
    "googlenet": (lambda: models().googlenet(num_classes=10, aux_logits=False,
                                              init_weights=True), (3, 32, 32)),
    "densenet": (_densenet, (3, 32, 32)),
    "mobilenet_v2": (lambda: models().mobilenet_v2(num_classes=10), (3, 32, 32)),
    "mobilenet_v3": (lambda: models().mobilenet_v3_small(num_classes=10), (3, 32, 32)),
    "efficientnet": (lambda: models().efficientnet_b0(num_classes=10), (3, 32, 32)),
    "mnasnet": (lambda: models().mnasnet0_5(num_classes=10), (3, 32, 32)),
    "regnet": (lambda: models().regnet_y_400mf(num_classes=10), (3, 32, 32)),
    "shufflenet_v2": (lambda: models().shufflenet_v2_x0_5(num_classes=10), (3, 32, 32)),
    "convnext": (lambda: models().convnext_tiny(num_classes=10), (3, 32, 32)),
    "vit": (_vit, (3, 32, 32)),
}


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """The model with every parameter and BatchNorm statistic drawn at random, in eval
    mode: freshly built torchvision models have running means of 0 and variances of 1 and
    near-zero heads, which would let a wrong import pass a comparison."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.is_floating_point():
                continue
            noise = torch.rand(tensor.shape, generator=generator)
            if tensor.dim() <= 1:  # scales, shifts and running statistics
                tensor.copy_(0.5 + noise)
            else:
                bound = 1.0 / max(1, tensor[0].numel()) ** 0.5
                tensor.copy_((noise * 2 - 1) * bound * 1.7)
    return model.eval()
