"""iSQRT-COV (fast MPN-COV) pooling on a ResNet: second-order features for fine-grained work.

Head, after the last residual stage (stride 1, as in the authors' release): 1x1 convolution
to 256 channels with BN and ReLU -> covariance of the features over spatial positions ->
divide by the trace -> matrix square root by Newton-Schulz iterations -> multiply by
sqrt(trace) -> the upper triangle as a vector (256 * 257 / 2 = 32,896 values) -> linear
classifier. Every step is differentiable, and the iterations use only matrix products, so it
runs fast on GPUs (no eigendecomposition).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from timm.models.resnet import Bottleneck, ResNet

from fgvc.errors import WeightsError


def covariance(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) covariance over the H*W positions (biased, as in the paper)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h * w)
    centred = x - x.mean(dim=2, keepdim=True)
    return centred @ centred.transpose(1, 2) / (h * w)


def newton_schulz_sqrt(matrix: torch.Tensor, iterations: int = 5) -> torch.Tensor:
    """Square root of symmetric positive semi-definite matrices (B, C, C).

    Pre-normalised by the trace so the iterations converge, then post-compensated by
    sqrt(trace). Runs in float32 even under autocast: the iteration is sensitive to precision.
    """
    with torch.autocast(device_type="cuda" if matrix.is_cuda else "cpu", enabled=False):
        a = matrix if matrix.dtype == torch.float64 else matrix.float()
        b, c, _ = a.shape
        eye = torch.eye(c, device=a.device, dtype=a.dtype).expand(b, c, c)
        trace = a.diagonal(dim1=1, dim2=2).sum(dim=1).clamp_min(1e-12).view(b, 1, 1)
        y = a / trace
        z = eye
        for _ in range(iterations):
            t = 0.5 * (3.0 * eye - z @ y)
            y, z = y @ t, t @ z
        return y * trace.sqrt()


def upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    c = matrix.shape[-1]
    rows, cols = torch.triu_indices(c, c, device=matrix.device)
    return matrix[:, rows, cols]


class ISqrtCovPool(nn.Module):
    """Covariance pooling with the iterative matrix square root; returns the vectorised triangle."""

    def __init__(self, iterations: int = 5):
        super().__init__()
        self.iterations = iterations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upper_triangle(newton_schulz_sqrt(covariance(x), self.iterations))


class MPNCovResNet(ResNet):
    """A timm ResNet whose global average pooling is replaced by iSQRT-COV, as the authors built it.

    As in their release, the last stage keeps stride 1 (a 448 px input gives 28x28 positions to
    the covariance, not 14x14), and the head's modules carry their names (``layer_reduce``,
    ``layer_reduce_bn``, ``layer_reduce_relu``, ``fc``), so the authors' checkpoints load tensor
    for tensor. Backbone names are ResNet's, so ImageNet ResNet weights load too; the reduction
    then starts new (``new_head_modules`` tells the weight loader so).
    """

    new_head_modules = ("layer_reduce", "layer_reduce_bn")
    strict_checkpoint = True  # every checkpoint tensor must be used (the classifier may differ)

    def __init__(self, layers: list[int], num_classes: int = 1000, reduced_dim: int = 256,
                 iterations: int = 5, drop_rate: float = 0.0, **kwargs):
        super().__init__(Bottleneck, layers, num_classes=0, global_pool="", **kwargs)
        _unstride(self.layer4)
        self.feature_info[-1]["reduction"] = self.feature_info[-2]["reduction"]
        self.layer_reduce = nn.Conv2d(self.num_features, reduced_dim, kernel_size=1, bias=False)
        self.layer_reduce_bn = nn.BatchNorm2d(reduced_dim)
        self.layer_reduce_relu = nn.ReLU(inplace=True)
        self.cov_pool = ISqrtCovPool(iterations)
        self.head_features = reduced_dim * (reduced_dim + 1) // 2
        self.head_drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.fc = nn.Linear(self.head_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.head_features, num_classes) if num_classes else nn.Identity()

    def covariance_input(self, x: torch.Tensor) -> torch.Tensor:
        """The reduced feature map the covariance is taken over (B, 256, H/16, W/16)."""
        return self.layer_reduce_relu(self.layer_reduce_bn(self.layer_reduce(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.cov_pool(self.covariance_input(x))
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)


def _unstride(stage: nn.Module) -> None:
    """Stride 1 in every convolution of ``stage`` (its first block's 3x3 and shortcut)."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)


# Keywords timm's create_model passes that only its own builders understand.
TIMM_FACTORY_ONLY = {"pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
_MPNCOV_DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def _mpncov(depth: int, pretrained: bool, **kwargs) -> MPNCovResNet:
    """``pretrained`` loads timm's ImageNet ResNet of the same depth into the backbone (the
    covariance head starts new), as the iSQRT-COV authors initialised theirs."""
    kwargs = {k: v for k, v in kwargs.items() if k not in TIMM_FACTORY_ONLY}
    model = MPNCovResNet(_MPNCOV_DEPTHS[depth], **kwargs)
    if pretrained:
        import timm

        backbone = timm.create_model(f"resnet{depth}", pretrained=True).state_dict()
        backbone = {k: v for k, v in backbone.items() if not k.startswith("fc.")}
        missing = [k for k in model.load_state_dict(backbone, strict=False).missing_keys
                   if not k.startswith(("layer_reduce", "fc."))]
        if missing:
            raise WeightsError(f"resnet{depth} ImageNet weights lack {missing[:3]}")
    model.pretrained_cfg = {"input_size": (3, 448, 448), "interpolation": "bilinear",
                            "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                            "crop_pct": 0.875, "classifier": "fc"}
    return model


@register_model
def mpncov_resnet50(pretrained: bool = False, **kwargs) -> MPNCovResNet:
    return _mpncov(50, pretrained, **kwargs)


@register_model
def mpncov_resnet101(pretrained: bool = False, **kwargs) -> MPNCovResNet:
    return _mpncov(101, pretrained, **kwargs)


@register_model
def mpncov_resnet152(pretrained: bool = False, **kwargs) -> MPNCovResNet:
    return _mpncov(152, pretrained, **kwargs)
