"""``bcosify``: a pretrained network -> a new B-cos network (docs/bcosification.md#the-recipe).

The recipe's steps live in :mod:`alignnet.bcosification.steps`; this module finds, per model family,
the body (everything up to the last feature map or token sequence) and the classifier, runs the
steps on a copy, and assembles ``encoding -> body -> 1x1 B-cos classifier -> global average pool ->
logit bias``. The conversion is recorded in ``model_name``/``model_args`` so that
:func:`alignnet.save_model`/:func:`alignnet.load_model` rebuild it without the original object.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import GlobalAvgPool2d
from ..layers._mode import non_detachable_modules
from ..models.cifar import PlainCNN
from ._layers import BcosifiedConv2d, BcosifiedLinear, InputEncoding, TokenPool
from .steps import (
    classifier_to_conv,
    convert_activations,
    convert_norms,
    convert_to_bcos,
    expand_first_conv,
    linear_as_conv,
    logit_bias,
    remove_biases,
    replace_max_pools,
)

__all__ = ["BCOSIFIED_NAME", "BcosifiedNetwork", "bcosify", "build_source", "from_recipe"]

BCOSIFIED_NAME = "bcosified"  # model_name of every B-cosified network (save_model metadata)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# leaf modules the recipe converts or keeps as they are (dynamic-linear)
_KNOWN_LEAVES = (
    nn.Conv2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.ReLU,
    nn.GELU,
    nn.SiLU,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
    nn.Flatten,
    nn.MultiheadAttention,
)
# dynamic-linear but not part of the recipe: kept, with a warning
_KEPT_WITH_WARNING = (nn.LeakyReLU, nn.AdaptiveMaxPool2d)
# containers whose forward only composes their children with linear glue (adds, concatenations,
# reshapes, F.relu, layer scale); torchvision classes by name
_KNOWN_CONTAINERS = {
    "torchvision.models.resnet": {"ResNet", "BasicBlock", "Bottleneck"},
    "torchvision.models.densenet": {"DenseNet", "_DenseBlock", "_DenseLayer", "_Transition"},
    "torchvision.models.vgg": {"VGG"},
    "torchvision.models.convnext": {"ConvNeXt", "CNBlock", "CNBlockConfig"},
    "torchvision.models.vision_transformer": {"VisionTransformer", "Encoder", "EncoderBlock", "MLPBlock"},
    "torchvision.ops.misc": {"Conv2dNormActivation", "Permute", "MLP"},
    "torchvision.ops.stochastic_depth": {"StochasticDepth"},
    "alignnet.models.cifar": {"PlainCNN"},
}
_TORCHVISION_PREFIXES = {
    "ResNet": ("resnet", "resnext", "wide_resnet"),
    "DenseNet": ("densenet",),
    "VGG": ("vgg",),
    "ConvNeXt": ("convnext",),
    "VisionTransformer": ("vit_",),
}


class BcosifiedNetwork(nn.Module):
    """``images (N, C, H, W) in [0, 1] -> logits (N, K)``: encoding, body, B-cos classifier, pooling, logit bias.

    For convolutional bodies the classifier is a 1x1 B-cos convolution on every position and ``pool``
    averages the class maps; for ViTs it is a B-cos linear layer on every token and ``pool`` averages
    the tokens (or takes the class token).
    """

    def __init__(
        self,
        encoding: InputEncoding,
        body: nn.Module,
        classifier: nn.Module,
        pool: nn.Module,
        logit: nn.Module,
        takes_constant: bool = False,
    ) -> None:
        super().__init__()
        self.encoding, self.body, self.classifier, self.pool, self.logit = encoding, body, classifier, pool, logit
        self.takes_constant = takes_constant  # the body adds constants (ViT tokens) scaled by the encoding's 1
        self.b_target, self.b_warmup_epochs = 2.0, 0.0
        self.recipe: dict[str, Any] = {}  # bcosify's arguments; "source" is looked up on first use
        self._find_source: Any = None
        self._source_problem: str | None = None

    @property
    def model_args(self) -> dict[str, Any]:
        """The conversion recipe (what :func:`alignnet.save_model` records): the source architecture
        (``{"name", "args"}``, or None when unknown) and ``bcosify``'s arguments."""
        if self.recipe.get("source") is None and self._find_source is not None:
            (self.recipe["source"], self._source_problem), self._find_source = self._find_source(), None
        return self.recipe

    @property
    def source_problem(self) -> str | None:
        """Why the source architecture is unknown (``model_args["source"]`` is None), else None."""
        return self._source_problem if self.model_args.get("source") is None else None

    def forward(self, x: Tensor) -> Tensor:
        if self.takes_constant:
            z, one = self.encoding.encode(x)
            features = self.body(z, one)
        else:
            features = self.body(self.encoding(x))
        return self.logit(self.pool(self.classifier(features)))

    def bcos_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, BcosifiedConv2d | BcosifiedLinear)]

    def set_b(self, b: float) -> None:
        """Set the alignment pressure of every B-cos layer (``b >= 1``)."""
        if not b >= 1:
            raise InputError(f"b must be >= 1, got {b}")
        for m in self.bcos_layers():
            m.b = float(b)

    def b_at(self, epoch: float) -> float:
        """The b of the schedule at a (fractional) fine-tuning epoch: linear from 1 to ``b_target`` over
        ``b_warmup_epochs`` (the paper's ablation), constant ``b_target`` when that is 0."""
        if self.b_warmup_epochs <= 0:
            return self.b_target
        return 1 + (self.b_target - 1) * min(max(epoch, 0.0) / self.b_warmup_epochs, 1.0)


class _ViTBody(nn.Module):
    """torchvision ``VisionTransformer`` up to the final layer norm: ``(N, 6, H, W), one (N,) -> (N, 1 + L, E)``.

    The class token and positional embedding are multiplied by ``one`` (a linear function of the input
    encoding that equals 1), so they are attributed to the input and completeness stays exact."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout, self.layers, self.ln = vit.encoder.dropout, vit.encoder.layers, vit.encoder.ln

    def forward(self, z: Tensor, one: Tensor) -> Tensor:
        x = self.conv_proj(z).flatten(2).transpose(1, 2)
        one = one.view(-1, 1, 1).to(x.dtype)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1) * one, x], dim=1)
        if x.shape[1] != self.pos_embedding.shape[1]:
            raise InputError(f"the image gives {x.shape[1]} tokens, the ViT needs {self.pos_embedding.shape[1]}")
        return self.ln(self.layers(self.dropout(x + self.pos_embedding * one)))


def _check_modules(model: nn.Module, trust: Sequence[type]) -> None:
    """Raise ``ValueError`` naming every module the recipe does not know; warn for kept dynamic-linear ones."""
    unknown, kept = [], []

    def visit(m: nn.Module, name: str) -> None:
        cls = type(m)
        if isinstance(m, _KNOWN_LEAVES):
            return  # MultiheadAttention's out_proj is handled with it
        if isinstance(m, _KEPT_WITH_WARNING):
            kept.append(f"{name} ({cls.__name__})")
            return
        plain = isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict) and (
            cls.forward in (nn.Sequential.forward, nn.ModuleList.forward, nn.ModuleDict.forward)
        )
        known = cls.__name__ in _KNOWN_CONTAINERS.get(cls.__module__, ()) or any(issubclass(cls, t) for t in trust)
        if not (plain or known):
            unknown.append(f"{name or '<model>'} ({cls.__module__}.{cls.__name__})")
            return
        for child_name, child in m.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    if unknown:
        raise InputError(
            "bcosify cannot convert these modules (not in the B-cosification recipe, so they could stay "
            "non-linear): " + ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "") + ". If a container's "
            "forward only combines its children linearly, pass trust=(ItsClass,)"
        )
    if kept:
        warnings.warn(
            "bcosify keeps these modules unchanged (dynamic-linear, but not part of the recipe): "
            + ", ".join(kept[:8]),
            stacklevel=3,
        )


def _require_global_pool(pool: nn.Module, name: str) -> None:
    """The recipe replaces the source's final pooling by the mean over every position after the classifier:
    that is the same function only for *global* average pooling (``AdaptiveAvgPool2d(1)``)."""
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size not in (1, (1, 1)):
        raise InputError(
            f"module {name!r} ({pool}) is not global average pooling: B-cosification moves the classifier "
            "before a global average pool, so only AdaptiveAvgPool2d(1) can be the final pooling"
        )


def _split_sequential(model: nn.Sequential) -> tuple[nn.Module, nn.Module]:
    """``[..., pool, flatten, Linear]`` or ``[..., 1x1 Conv2d, pool(, flatten)]`` -> (body, classifier)."""
    named = list(model.named_children())
    mods = [m for _, m in named]
    pools = (nn.AdaptiveAvgPool2d, GlobalAvgPool2d)
    while mods and isinstance(mods[-1], nn.Flatten | nn.Identity | nn.Dropout):
        mods.pop()
    if len(mods) >= 2 and isinstance(mods[-1], nn.Linear):
        rest = mods[:-1]
        while rest and isinstance(rest[-1], nn.Flatten | nn.Identity | nn.Dropout):
            rest.pop()
        if rest and isinstance(rest[-1], pools):
            _require_global_pool(rest[-1], named[len(rest) - 1][0])
            return nn.Sequential(*rest[:-1]), mods[-1]
    if len(mods) >= 2 and isinstance(mods[-1], pools) and isinstance(mods[-2], nn.Conv2d):
        _require_global_pool(mods[-1], named[len(mods) - 1][0])
        return nn.Sequential(*mods[:-2]), mods[-2]
    raise InputError(
        "cannot find the classifier of this nn.Sequential: it must end with global average pooling, "
        "Flatten and a Linear, or with a 1x1 Conv2d and global average pooling"
    )


def _split(model: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(body, classifier, "maps" | "tokens") of a copy of a supported model."""
    name = type(model).__name__
    if name == "ResNet":
        _require_global_pool(model.avgpool, "avgpool")
        keep = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        return nn.Sequential(OrderedDict((k, getattr(model, k)) for k in keep)), model.fc, "maps"
    if name == "DenseNet":  # its forward applies F.relu after the features
        return nn.Sequential(OrderedDict(features=model.features, relu=nn.ReLU())), model.classifier, "maps"
    if name == "VGG":
        linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
        size = model.avgpool.output_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        head: list[nn.Module] = []
        for m in list(model.classifier)[:-1]:  # the first Linear acts on the flattened pooled map
            head.append(linear_as_conv(m, size if m is linears[0] else (1, 1)) if isinstance(m, nn.Linear) else m)
        body = nn.Sequential(OrderedDict(features=model.features, avgpool=model.avgpool, head=nn.Sequential(*head)))
        last = model.classifier[-1]
        return body, last, "maps"
    if name == "ConvNeXt":  # head: LayerNorm2d, Flatten, Linear; the norm moves before pooling
        _require_global_pool(model.avgpool, "avgpool")
        norm, _, linear = model.classifier
        return nn.Sequential(OrderedDict(features=model.features, norm=norm)), linear, "maps"
    if name == "VisionTransformer":
        if hasattr(model.heads, "pre_logits"):
            raise InputError(
                "ViTs with a pre-logits layer (Linear + Tanh) are not supported: Tanh is not dynamic-linear"
            )
        return _ViTBody(model), model.heads.head, "tokens"
    if isinstance(model, PlainCNN):
        layers = list(model.features)
        return nn.Sequential(*layers[:-1]), layers[-1], "maps"
    if isinstance(model, nn.Sequential):
        body, classifier = _split_sequential(model)
        return body, classifier, "maps"
    raise TypeError(
        f"bcosify does not know how to find the classifier of {type(model).__module__}.{name}; supported: "
        "torchvision ResNet/ResNeXt, DenseNet, VGG, ConvNeXt, vit_*, alignnet's plain_cnn_9l and nn.Sequential "
        "models ending in global average pooling + Linear"
    )


def _source_finder(model: nn.Module):
    """A function returning how to rebuild the source architecture with random weights and, when that is
    unknown, why: ``({"name", "args"} | None, reason | None)``.

    A source that records its builder (``model_name``/``model_args``: :func:`alignnet.create_model`,
    :func:`build_source`) is taken at its word. A torchvision model is matched to the builder that makes
    exactly its configuration (every module's class, tensor shapes and hyper-parameters such as ``num_heads``,
    ``eps`` or dropout; :func:`alignnet.models.io.module_configuration`), called with the classifier's number
    of classes (and a ViT's image size); equal shapes alone are not enough (a 6-head ViT-B has the shapes of
    ``vit_b_16``). Trying the builders takes seconds, so it runs on first use."""
    from ..models.io import module_configuration

    name, args = getattr(model, "model_name", None), getattr(model, "model_args", None)
    if isinstance(name, str) and isinstance(args, dict):
        found = {"name": name, "args": dict(args)}
        return lambda: (found, None)
    cls = type(model)
    prefixes = _TORCHVISION_PREFIXES.get(cls.__name__)
    if prefixes is None or not cls.__module__.startswith("torchvision."):
        return lambda: (None, f"{cls.__module__}.{cls.__qualname__} does not record how it was built")
    config = module_configuration(model)
    args = {"num_classes": _classifier_out(model)}
    if hasattr(model, "image_size"):
        args["image_size"] = int(model.image_size)
    return lambda: _match_torchvision(cls, config, args, prefixes)


def _match_torchvision(cls: type, config: dict, args: dict[str, Any], prefixes: tuple[str, ...]):
    import torchvision

    from ..models.io import configuration_differences, module_configuration

    closest: tuple[str, list] | None = None
    for arch in torchvision.models.list_models(module=torchvision.models):
        if not arch.startswith(prefixes):
            continue
        try:
            with torch.device("meta"):
                candidate = torchvision.models.get_model(arch, weights=None, **args)
        except Exception:  # builders that reject these arguments (e.g. a ViT's image size)
            continue
        if type(candidate) is not cls:
            continue
        differences = configuration_differences(config, module_configuration(candidate))
        if not differences:
            return {"name": "torchvision:" + arch, "args": args}, None
        if closest is None or len(differences) < len(closest[1]):
            closest = (arch, differences)
    if closest is None:
        return None, f"no torchvision builder makes a {cls.__name__} with {args}"
    arch, differences = closest
    more = f" (and {len(differences) - 1} more differences)" if len(differences) > 1 else ""
    return None, f"no torchvision builder makes exactly this {cls.__name__}: {arch} differs at {differences[0]}{more}"


def _classifier_out(model: nn.Module) -> int:
    for m in reversed(list(model.modules())):
        if isinstance(m, nn.Linear):
            return m.out_features
    raise InputError("no Linear classifier found")


def build_source(source: dict[str, Any]) -> nn.Module:
    """The source architecture of a recipe with random weights: ``torchvision:<builder>`` or a registry
    name (``plain_cnn_9l`` among them), with its recorded arguments."""
    name, args = source["name"], dict(source.get("args", {}))
    if name.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(name.split(":", 1)[1], weights=None, **args)
        model.model_name, model.model_args = name, args
        return model
    from ..models import create_model

    return create_model(name, **args)


def bcosify(
    model: nn.Module,
    num_classes: int | None = None,
    *,
    b: float = 2.0,
    keep_activation: bool = True,
    b_warmup_epochs: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    layer_norm: str = "centered",
    token_pool: str = "mean",
    image_channels: int = 3,
    input_spec: Any = None,
    trust: Sequence[type] = (),
) -> BcosifiedNetwork:
    """Convert a trained network into a new B-cos network (B-cosification, docs/bcosification.md#the-recipe).

    Parameters
    ----------
    model:
        A torchvision ResNet/ResNeXt, DenseNet, VGG (with or without BN), ConvNeXt or ``vit_*``,
        alignnet's ``plain_cnn_9l``, or an ``nn.Sequential`` of known layers ending in global average
        pooling + Linear. It is not modified.
    num_classes:
        Classes of the new network; ``None`` keeps the classifier (a different number: a new random one).
    b:
        Alignment pressure of every B-cos layer (the paper: 2, fixed from the start).
    keep_activation:
        Keep ReLU/GELU/SiLU (as detachable gates); ``False``: the paper's "no activation" ablation.
    b_warmup_epochs:
        The paper's b-schedule ablation: fine-tuning raises b linearly from 1 to ``b`` over this many
        epochs (the trainer calls :meth:`BcosifiedNetwork.b_at`); 0: fixed b.
    mean, std:
        The source network's input normalisation, extended to ``[x, 1-x]``; default: ImageNet's for
        torchvision models, none (0 and 1) for others.
    layer_norm:
        ``"centered"`` (bias-free layer norm that still subtracts the mean) or ``"uncentered"``.
    token_pool:
        ViTs: ``"mean"`` (the head on every token, then the mean: the GAP reorder) or ``"cls"``.
    input_spec:
        :class:`alignnet.models.InputSpec` (or its dict) to attach; default: the source's, or 224 px for torchvision.
    trust:
        Container classes whose ``forward`` only combines their children linearly (checked otherwise).

    Returns
    -------
    BcosifiedNetwork
        ``(N, image_channels, H, W)`` images in [0, 1] -> ``(N, num_classes)`` logits; dynamic-linear, so
        :func:`alignnet.explain` is exact. It records the recipe in ``model_name``/``model_args``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"bcosify needs an nn.Module, got {type(model).__name__}")
    if not float(b) >= 1:
        raise InputError(f"b must be >= 1, got {b}")
    torchvision_model = type(model).__module__.startswith("torchvision.")
    mean = list(mean) if mean is not None else list(IMAGENET_MEAN if torchvision_model else [0.0] * image_channels)
    std = list(std) if std is not None else list(IMAGENET_STD if torchvision_model else [1.0] * image_channels)
    src = copy.deepcopy(model)
    if not any(p.is_meta for p in src.parameters()):  # save_model's architecture check builds on the meta device
        src = src.cpu()
    src = src.float()
    _check_modules(src, trust)
    body, classifier, kind = _split(src)

    expand_first_conv(body, image_channels)
    remove_biases(body)
    convert_norms(body, layer_norm)
    convert_to_bcos(body, b)
    replace_max_pools(body)
    convert_activations(body, keep_activation)
    if kind == "tokens":
        head = nn.Linear(classifier.in_features, num_classes or classifier.out_features, bias=False)
        if num_classes in (None, classifier.out_features):
            head.weight.data.copy_(classifier.weight.detach())
        pool: nn.Module = TokenPool(token_pool)
    else:
        head = classifier_to_conv(classifier, num_classes)
        pool = GlobalAvgPool2d()
    head = convert_to_bcos(nn.Sequential(head), b)[0]
    n_classes = head.out_features if kind == "tokens" else head.out_channels
    net = BcosifiedNetwork(InputEncoding(mean, std), body, head, pool, logit_bias(n_classes), kind == "tokens")
    net.b_target, net.b_warmup_epochs = float(b), float(b_warmup_epochs)

    bad = non_detachable_modules(net)
    leftover = [n for n, m in net.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    if bad or leftover:
        raise InputError(f"bcosify left modules that are not dynamic-linear B-cos layers: {bad + leftover}")
    spec = _input_spec(model, input_spec, torchvision_model)
    net.input_spec = spec
    net.model_name = BCOSIFIED_NAME
    net._find_source = _source_finder(model)
    net.recipe = {
        "source": None,
        "num_classes": n_classes,
        "b": float(b),
        "keep_activation": bool(keep_activation),
        "b_warmup_epochs": float(b_warmup_epochs),
        "mean": mean,
        "std": std,
        "layer_norm": layer_norm,
        "token_pool": token_pool,
        "image_channels": image_channels,
        "input_spec": spec.to_dict() if spec is not None else None,
    }
    return net


def _input_spec(model: nn.Module, given: Any, torchvision_model: bool):
    from ..models import InputSpec

    if isinstance(given, InputSpec):
        return given
    if isinstance(given, dict):
        return InputSpec.from_dict(given)
    spec = getattr(model, "input_spec", None)
    if isinstance(spec, InputSpec):
        return InputSpec.from_dict({**spec.to_dict(), "encoding": "add_inverse"})
    if torchvision_model:
        size = int(getattr(model, "image_size", 224))
        return InputSpec(size=(size, size), resize=256 if size == 224 else None)
    return None


def from_recipe(args: dict[str, Any]) -> BcosifiedNetwork:
    """Rebuild a B-cosified network (random weights) from its recorded ``model_args``."""
    args = dict(args)
    source = args.pop("source", None)
    if not isinstance(source, dict) or "name" not in source:
        raise InputError("this B-cosified model does not record its source architecture, so it cannot be rebuilt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warnings were shown when the model was first converted
        return bcosify(build_source(source), **args)
