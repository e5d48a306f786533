"""B-cosification (docs/bcosification.md#the-recipe): each recipe step against an independent reference, exact
explanations (completeness in float64) for every supported family, the untouched source, clear errors,
save/load of the recipe, adaptive gradient clipping and the fine-tuning presets. Nothing is downloaded."""

import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import alignnet
from alignnet.bcosification import BcosifiedConv2d, BcosifiedLinear, InputEncoding, bcosify, steps
from alignnet.models import create_model
from alignnet.train.agc import adaptive_clip_grad_

DT = torch.float64


def _explain_exact(net, size, n=2, channels=3):
    """Completeness in float64, with every warning an error (no module left non-linear).

    The fixed logit bias is set to 0 for the check: random B-cos networks give tiny class scores
    (b=2 squares the scale in every layer), which next to a bias of -log(C-1) would be lost to rounding."""
    net = net.to(DT).eval()
    net.logit.bias.zero_()
    x = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0), dtype=DT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = alignnet.explain(net, x)
    assert e.outputs.abs().max() > 0  # not a degenerate (all-zero) network
    assert e.completeness_error() < 1e-12
    return e


# ---------------------------------------------------------------- recipe steps, one by one
def test_input_encoding_is_the_normalised_six_channel_image():
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = torch.rand(2, 3, 5, 5, dtype=DT)
    z = InputEncoding(mean, std).to(DT)(x)
    m6 = torch.tensor(mean + [1 - v for v in mean], dtype=DT)[None, :, None, None]
    s6 = torch.tensor(std + std, dtype=DT)[None, :, None, None]
    torch.testing.assert_close(z, (torch.cat([x, 1 - x], 1) - m6) / s6)
    _, one = InputEncoding(mean, std).to(DT).encode(x)
    torch.testing.assert_close(one, torch.ones(2, dtype=DT))


def test_expand_first_conv_keeps_the_original_function():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU())
    original = conv.weight.detach().clone()
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    new = steps.expand_first_conv(net)
    assert net[0] is new and new.in_channels == 6
    x = torch.rand(2, 3, 8, 8)
    ref = F.conv2d(
        (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None], original, conv.bias, padding=1
    )
    torch.testing.assert_close(new(InputEncoding(mean, std)(x)), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="expects 3 image channels"):
        steps.expand_first_conv(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_remove_biases():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2), nn.Conv2d(4, 4, 1, bias=False))
    steps.remove_biases(net)
    assert all(m.bias is None for m in net)


def test_convert_norms_drops_mean_and_bias():
    bn = nn.BatchNorm2d(4)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    ln = nn.LayerNorm(6)
    ln.weight.data.uniform_(0.5, 2)
    ln.bias.data.uniform_(-1, 1)
    ln2d = torchvision.models.convnext.LayerNorm2d(4)
    net = steps.convert_norms(nn.Sequential(bn, ln, ln2d)).eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(net[0](x), x * (bn.weight / (bn.running_var + bn.eps).sqrt())[None, :, None, None])
    t = torch.randn(2, 5, 6)
    torch.testing.assert_close(net[1](t), F.layer_norm(t, (6,), ln.weight, None, ln.eps), rtol=1e-5, atol=1e-5)
    ref2d = F.layer_norm(x.permute(0, 2, 3, 1), (4,), ln2d.weight, None, ln2d.eps).permute(0, 3, 1, 2)
    torch.testing.assert_close(net[2](x), ref2d, rtol=1e-5, atol=1e-5)
    assert not any(getattr(m, "bias", None) is not None for m in net)
    unc = steps.convert_norms(nn.Sequential(nn.LayerNorm(6)), layer_norm="uncentered")[0]
    torch.testing.assert_close(unc(t), t / (t.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())


def test_convert_to_bcos_keeps_unnormalised_weights():
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=False), nn.Linear(5, 3, bias=False)
    x, t = torch.randn(2, 4, 7, 7, dtype=DT), torch.randn(4, 5, dtype=DT)
    conv, lin = conv.to(DT), lin.to(DT)
    b1 = steps.convert_to_bcos(nn.Sequential(conv, lin), b=1.0)
    assert isinstance(b1[0], BcosifiedConv2d) and isinstance(b1[1], BcosifiedLinear)
    torch.testing.assert_close(b1[0](x), conv(x))  # b=1: the original (bias-free) layer
    torch.testing.assert_close(b1[1](t), lin(t))
    b2 = steps.convert_to_bcos(nn.Sequential(conv, lin), b=2.0)
    # brute force: per patch, |w.x| / ||x_patch|| * (w.x), with the unnormalised w and the group's patch
    lin_out = conv(x)
    patches = F.unfold(x, 3, padding=1, stride=2).view(2, 2, 2 * 9, -1)  # (N, groups, C/g*k*k, L)
    norms = (patches.pow(2).sum(2) + 1e-6).sqrt().repeat_interleave(3, 1).view_as(lin_out)
    torch.testing.assert_close(b2[0](x), lin_out * lin_out.abs() / norms)
    ref = lin(t) * lin(t).abs() / (t.norm(dim=-1, keepdim=True) + 1e-12)
    torch.testing.assert_close(b2[1](t), ref)
    with pytest.raises(ValueError, match="still has a bias"):
        steps.convert_to_bcos(nn.Sequential(nn.Conv2d(2, 2, 1)))


def test_replace_max_pools_and_activations():
    net = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.ReLU(inplace=True), nn.GELU(), nn.SiLU())
    steps.replace_max_pools(net)
    assert isinstance(net[0], nn.AvgPool2d) and (net[0].kernel_size, net[0].stride, net[0].padding) == (3, 2, 1)
    steps.convert_activations(net)
    assert isinstance(net[1], nn.ReLU) and not net[1].inplace
    x = torch.randn(3, 4)
    torch.testing.assert_close(net[2](x), F.gelu(x))
    torch.testing.assert_close(net[3](x), F.silu(x))
    with alignnet.explanation_mode(net[2]):  # the gate is detached: d/dx = Phi(x)
        xg = x.clone().requires_grad_()
        net[2](xg).sum().backward()
    torch.testing.assert_close(xg.grad, 0.5 * (1 + torch.erf(x / math.sqrt(2))))
    dropped = steps.convert_activations(nn.Sequential(nn.ReLU(), nn.GELU()), keep_activation=False)
    assert all(isinstance(m, nn.Identity) for m in dropped)


def test_classifier_before_pooling_and_logit_bias():
    torch.manual_seed(0)
    lin = nn.Linear(8, 5, bias=False)
    conv = steps.classifier_to_conv(lin)
    f = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(conv(f).mean((2, 3)), lin(f.mean((2, 3))), rtol=1e-5, atol=1e-6)
    assert conv.bias is None and steps.classifier_to_conv(lin, num_classes=3).out_channels == 3
    assert steps.logit_bias(10).bias.item() == pytest.approx(-math.log(9))
    with pytest.raises(ValueError):
        steps.logit_bias(1)


# ---------------------------------------------------------------- whole networks: exact explanations
def _tiny_vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    return vit


def _sequential():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip


FAST = {
    "plain_cnn_9l": (lambda: create_model("plain_cnn_9l", width=0.25), 32),
    "sequential": (_sequential, 16),
    "vit_tiny": (_tiny_vit, 32),
    "resnet18": (torchvision.models.resnet18, 32),
}
SLOW = {
    "resnext50_32x4d": (torchvision.models.resnext50_32x4d, 32),
    "densenet121": (torchvision.models.densenet121, 32),
    "vgg11_bn": (torchvision.models.vgg11_bn, 32),
    "vgg11": (torchvision.models.vgg11, 32),
    "convnext_tiny": (torchvision.models.convnext_tiny, 32),
    "vit_b_16": (lambda: _randomise_head(torchvision.models.vit_b_16(image_size=32)), 32),
}


def _randomise_head(vit):
    nn.init.normal_(vit.heads.head.weight, std=0.01)
    return vit


def _family_cases():
    for name, case in FAST.items():
        yield pytest.param(*case, id=name)
    for name, case in SLOW.items():
        yield pytest.param(*case, id=name, marks=pytest.mark.slow)


@pytest.mark.parametrize("build, size", list(_family_cases()))
def test_completeness_every_family(build, size):
    torch.manual_seed(0)
    net = bcosify(build())
    with torch.no_grad():  # unit-norm rows: random VGG weights (std 0.01) would underflow after 11 b=2 layers
        for m in net.bcos_layers():
            m.weight /= torch.linalg.vector_norm(m.weight, dim=tuple(range(1, m.weight.dim())), keepdim=True)
    _explain_exact(net, size)


@pytest.mark.parametrize("keep_activation", [True, False])
@pytest.mark.parametrize("b", [1.0, 1.5, 2.5])
def test_completeness_ablations(b, keep_activation):
    net = bcosify(create_model("plain_cnn_9l", width=0.25), b=b, keep_activation=keep_activation)
    assert all(m.b == b for m in net.bcos_layers())
    assert any(isinstance(m, nn.ReLU) for m in net.modules()) == keep_activation
    _explain_exact(net, 16)


def test_imagenet_weights_if_cached():
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        pytest.skip("torchvision's ResNet-18 ImageNet weights are not in the cache (no downloads in tests)")
    model = torchvision.models.resnet18()
    model.load_state_dict(torch.load(path, weights_only=True))
    _explain_exact(bcosify(model), 64)


def test_source_model_untouched_and_structure():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules_before = [type(m) for m in model.modules()]
    net = bcosify(model)
    assert [type(m) for m in model.modules()] == modules_before and model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(net.body.maxpool, nn.AvgPool2d) and net.body.conv1.in_channels == 6
    assert net.classifier.kernel_size == (1, 1) and net.classifier.out_channels == 7
    assert net.logit.bias.item() == pytest.approx(-math.log(6))
    assert not any(type(m) in (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MaxPool2d) for m in net.modules())
    # the first conv holds cat(W, -W) / 2 of the source, the others the source's weights unnormalised
    torch.testing.assert_close(net.body.conv1.weight, torch.cat([model.conv1.weight, -model.conv1.weight], 1) / 2)
    torch.testing.assert_close(net.body.layer1[0].conv1.weight, model.layer1[0].conv1.weight)
    assert bcosify(model, num_classes=3).classifier.out_channels == 3


def test_unknown_modules_are_named():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) + 1

    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)]
    with pytest.raises(ValueError, match=r"1 \(torch.nn.modules.activation.Tanh\)"):
        bcosify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), *head))
    with pytest.raises(ValueError, match="Custom"):
        bcosify(nn.Sequential(Custom(), *head))
    with pytest.warns(UserWarning, match="LeakyReLU"):
        net = bcosify(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(), *head))
    _explain_exact(net, 8)
    with pytest.raises(TypeError, match="does not know how to find the classifier"):
        bcosify(Custom(), trust=(Custom,))


def test_non_global_pooling_is_refused_naming_the_module():
    # AdaptiveAvgPool2d(2) keeps a 2x2 map for the classifier: moving the classifier before a global mean
    # would be another function (and its first forward failed on the classifier's 4x wider input)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))
    with pytest.raises(ValueError, match=r"'2' \(AdaptiveAvgPool2d\(output_size=2\)\) is not global"):
        bcosify(seq)
    resnet = torchvision.models.resnet18(num_classes=3)
    resnet.avgpool, resnet.fc = nn.AdaptiveAvgPool2d((2, 1)), nn.Linear(1024, 3)
    with pytest.raises(ValueError, match=r"'avgpool' .* is not global"):
        bcosify(resnet)
    seq[2] = nn.AdaptiveAvgPool2d((1, 1))
    seq[4] = nn.Linear(8, 4)
    _explain_exact(bcosify(seq), 8)  # global pooling given as (1, 1) is accepted


def test_b_schedule():
    net = bcosify(create_model("plain_cnn_9l", width=0.25), b=2.0, b_warmup_epochs=2.0)
    assert [net.b_at(e) for e in (0, 1, 2, 5)] == [1.0, 1.5, 2.0, 2.0]
    net.set_b(1.25)
    assert {m.b for m in net.bcos_layers()} == {1.25}
    assert bcosify(create_model("plain_cnn_9l", width=0.25)).b_at(0) == 2.0


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = bcosify(
        create_model("plain_cnn_9l", width=0.25), b=1.5, input_spec={"size": [32, 32], "style": "fashion_mnist"}
    )
    net.body[1].running_var.uniform_(0.5, 2)  # a non-default state
    path = alignnet.save_model(net, tmp_path / "b.safetensors")
    loaded = alignnet.load_model(path)
    assert loaded.model_args == net.model_args and loaded.input_spec == net.input_spec
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_save_load_torchvision(tmp_path):
    torch.manual_seed(0)
    net = bcosify(torchvision.models.resnet18(), num_classes=4)
    assert net.model_args["source"] == {"name": "torchvision:resnet18", "args": {"num_classes": 1000}}
    loaded = alignnet.load_model(alignnet.save_model(net, tmp_path / "r.safetensors"))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), net.eval()(x))


def test_save_refuses_a_torchvision_source_no_builder_makes_exactly(tmp_path):
    # built on the meta device: only the architecture matters here. A 6-head ViT-B has exactly the tensor
    # shapes of vit_b_16 (12 heads); matching builders by shapes saved it as vit_b_16 and the reload
    # silently computed another function
    def vit(**kwargs):
        with torch.device("meta"):
            return bcosify(torchvision.models.VisionTransformer(32, 16, 12, hidden_dim=768, mlp_dim=3072, **kwargs))

    six = vit(num_heads=6, num_classes=2)
    assert six.model_args["source"] is None
    with pytest.raises(ValueError, match=r"vit_b_16 differs at encoder.layers.encoder_layer_0.num_heads: 6 here"):
        alignnet.save_model(six, tmp_path / "six.safetensors")
    assert not (tmp_path / "six.safetensors").exists()
    # any other hyper-parameter a builder does not take from the model (here dropout) is refused too
    assert "dropout" in vit(num_heads=12, num_classes=2, dropout=0.1).source_problem
    twelve = vit(num_heads=12, num_classes=2)
    assert twelve.model_args["source"] == {"name": "torchvision:vit_b_16", "args": {"num_classes": 2, "image_size": 32}}
    assert twelve.source_problem is None


def test_save_during_b_warmup_keeps_b(tmp_path):
    torch.manual_seed(0)
    net = bcosify(create_model("plain_cnn_9l", width=0.25), b=2.0, b_warmup_epochs=2.0)
    net.set_b(net.b_at(0.5))  # what the trainer sets half an epoch into the warm-up
    net = net.double().eval()
    loaded = alignnet.load_model(alignnet.save_model(net, tmp_path / "warmup.safetensors"))
    assert {m.b for m in loaded.bcos_layers()} == {1.25} and loaded.b_at(0.5) == 1.25
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), net(x), rtol=1e-13, atol=1e-13)


def test_save_refuses_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="source architecture"):
        alignnet.save_model(bcosify(_sequential()), tmp_path / "s.safetensors")


# ---------------------------------------------------------------- adaptive gradient clipping
def test_agc_matches_per_row_brute_force():
    torch.manual_seed(0)
    params = [
        nn.Parameter(torch.randn(5, 3, 2, 2)),
        nn.Parameter(torch.randn(4, 6) * 1e-5),
        nn.Parameter(torch.randn(7)),
    ]
    for p in params:
        p.grad = torch.randn_like(p) * torch.rand(p.shape[0]).view(-1, *[1] * (p.dim() - 1)) * 0.05
    expected = []
    for p in params:
        rows = [(p.detach(), p.grad)] if p.dim() <= 1 else list(zip(p.detach(), p.grad, strict=True))
        clipped = []
        for w, g in rows:
            bound = 0.01 * max(float(w.norm()), 1e-3)
            clipped.append(g * (bound / float(g.norm())) if float(g.norm()) > bound else g.clone())
        expected.append(clipped[0] if p.dim() <= 1 else torch.stack(clipped))
    assert any(not torch.equal(e, p.grad) for e, p in zip(expected, params, strict=True))  # some rows clipped
    adaptive_clip_grad_(params, 0.01, 1e-3)
    for e, p in zip(expected, params, strict=True):
        torch.testing.assert_close(p.grad, e)


# ---------------------------------------------------------------- training presets
def _quick(preset, *overrides):
    from alignnet.train import apply_overrides, config_from_dict, load_preset

    quick = [
        "data.dataset=embedded",
        "trainer.epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    ]
    quick += ["trainer.progress_bar=false", "trainer.num_threads=1"]
    return config_from_dict(apply_overrides(load_preset(preset), quick + list(overrides)))


def test_presets_resolve():
    from alignnet.train import apply_overrides, config_from_dict, load_preset

    c = config_from_dict(load_preset("bcosify-imagenet-resnet50"))
    assert c.model.name == "torchvision:resnet50" and c.init_from == "IMAGENET1K_V2"
    assert c.trainer.agc_clip_factor == 0.01 and c.optimizer.lr == 1e-4 and c.scheduler.warmup_epochs == 0
    c = config_from_dict(apply_overrides(load_preset("bcosify-fmnist"), ["init_from=cnn.safetensors"]))
    assert c.init_from == "cnn.safetensors" and c.model.bcosify["b"] == 2.0 and c.trainer.epochs == 1


def test_init_from_plain_cnn_file(tmp_path):
    from safetensors.torch import save_file

    from alignnet.train.module import build_model

    torch.manual_seed(1)
    cnn = create_model("plain_cnn_9l", width=0.25)
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(tmp_path / "cnn.safetensors"))
    config = _quick("bcosify-fmnist")
    net = build_model(config.model, init_from=str(tmp_path / "cnn.safetensors"))
    ref = bcosify(cnn, 10, **config.model.bcosify)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), ref.eval()(x))
    saved = alignnet.save_model(ref, tmp_path / "b.safetensors")  # a B-cosified file initialises the B-cos net
    torch.testing.assert_close(build_model(config.model, init_from=str(saved)).eval()(x), ref(x))
    with pytest.raises(ValueError, match="not a weights name"):
        build_model(_quick("bcosify-fmnist", "model.name=torchvision:resnet18").model, init_from="NOPE")


@pytest.mark.slow
def test_finetune_and_resume(tmp_path):
    from alignnet.train import train

    cnn = train(_quick("fmnist-cnn"), tmp_path / "cnn")
    init = str(tmp_path / "cnn" / "model.safetensors")
    # a constant lr, so that a 1-epoch run resumed to 2 epochs follows the 2-epoch run exactly (on CPU)
    common = [f"init_from={init}", "trainer.agc_clip_factor=0.01", "scheduler.name=constant"]
    config = _quick("bcosify-fmnist", *common, "trainer.epochs=2")
    assert cnn.output_dir.is_dir()
    full = train(config, tmp_path / "full")
    loaded = alignnet.load_model(tmp_path / "full" / "model.safetensors")
    assert isinstance(loaded, alignnet.bcosification.BcosifiedNetwork)
    one = train(_quick("bcosify-fmnist", *common), tmp_path / "part")
    assert one.epochs_completed == 1
    (tmp_path / "part" / "config.yaml").write_text(
        (tmp_path / "part" / "config.yaml").read_text().replace("epochs: 1", "epochs: 2")
    )
    from alignnet.train import config_from_dict, load_config

    resumed = train(
        config_from_dict(load_config(tmp_path / "part" / "config.yaml")), tmp_path / "part", resume=tmp_path / "part"
    )
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
