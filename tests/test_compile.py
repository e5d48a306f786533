"""torch.compile: graph breaks, compiled vs eager forward, and exact explanations of compiled models.

docs/compile.md. Most tests compile with the ``aot_eager`` backend: it runs dynamo (graph capture,
guards, graph breaks) and AOTAutograd (the compiled graph is one autograd node), which is where
explanations of compiled models can go wrong, without inductor's C++ build (about a minute per
graph on a loaded 2-core machine). One slow test checks inductor's numerics end to end.
"""

import subprocess
import sys

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

import alignnet
from alignnet import create_model
from alignnet.explanation import layer_contributions
from alignnet.layers import AddInverse, explanation_mode
from alignnet.layers.encoding import recording_encodings
from conftest import tiny_bcos

SMALL = {  # name -> create_model arguments of a small version (32x32 inputs)
    "bcos_cifar10_9l": {"width": 0.25},
    "coda_cifar10_9l": {"width": 0.25},
    "bcos_resnet18": {"num_classes": 10},
    "bcos_vitc_ti": {"num_classes": 10},
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    # dynamo caches graphs per code object (shared by every instance of a class) and stops compiling a
    # frame after 8 recompiles, silently running it eagerly: start and end each test from nothing
    torch._dynamo.reset()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch._dynamo.reset()


def _model(name):
    torch.manual_seed(0)
    return create_model(name, **SMALL[name]).eval()


def _images(n=2):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def _counter():
    return CompileCounterWithBackend("aot_eager")


@pytest.mark.parametrize(
    "name",
    [
        "bcos_cifar10_9l",
        "coda_cifar10_9l",
        pytest.param("bcos_resnet18", marks=pytest.mark.slow),
        pytest.param("bcos_vitc_ti", marks=pytest.mark.slow),
    ],
)
def test_no_graph_breaks(name):
    """One graph, no break: for inference and in explanation mode (input gradients, factors detached)."""
    model = _model(name)
    x = _images(1)
    with torch.no_grad():
        report = torch._dynamo.explain(model)(x)
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons
    assert report.op_count > 20
    with explanation_mode(model):
        report = torch._dynamo.explain(model)(x.clone().requires_grad_(True))
    assert (report.graph_count, report.graph_break_count) == (1, 0), report.break_reasons


@pytest.mark.parametrize("name", ["bcos_cifar10_9l", pytest.param("coda_cifar10_9l", marks=pytest.mark.slow)])
def test_explain_compiled_equals_eager(name):
    model = _model(name)
    x = _images()
    counter = _counter()
    compiled = torch.compile(model, backend=counter)
    for targets in (None, "all"):
        eager = alignnet.explain(model, x, targets)
        got = alignnet.explain(compiled, x, targets)
        assert got.weights.shape == eager.weights.shape == ((2, 6, 32, 32) if targets is None else (2, 10, 6, 32, 32))
        assert _rel(got.weights, eager.weights) < 1e-5
        assert _rel(got.logits, eager.logits) < 1e-5
        assert torch.equal(got.targets, eager.targets) and torch.equal(got.inputs, eager.inputs)
        assert torch.equal(got.bias, eager.bias)
        assert got.completeness_error() < 1e-5
    assert counter.frame_count >= 1  # the model was compiled, not run eagerly
    # explain left the compiled model as it was: plain inference still matches
    with torch.no_grad():
        assert _rel(compiled(x), model(x)) < 1e-5


def test_a_graph_compiled_outside_explanation_mode_is_not_reused():
    """The only difference between the two calls is the explanation-mode flag: dynamo must recompile."""
    model = _model("bcos_cifar10_9l")
    for p in model.parameters():
        p.requires_grad_(False)  # as explain sets them, so that the flags are the only difference
    x = _images()
    counter = _counter()
    compiled = torch.compile(model, backend=counter)

    def input_gradient():
        xx = x.clone().requires_grad_(True)
        return torch.autograd.grad(compiled(xx)[:, 3].sum(), xx)[0]

    plain = input_gradient()  # a graph with the dynamic factors in the backward pass
    compiled_graphs = counter.frame_count
    with explanation_mode(compiled):
        detached = input_gradient()
    assert counter.frame_count > compiled_graphs  # recompiled for explanation mode
    with explanation_mode(model):
        xx = torch.cat([x, 1 - x], 1).requires_grad_(True)
        expected = torch.autograd.grad(model.logit_layer(model.pool(model.features(xx)))[:, 3].sum(), xx)[0]
    # d/dx of f([x, 1-x]) is W_a - W_b
    assert _rel(detached, expected[:, :3] - expected[:, 3:]) < 1e-5
    assert _rel(detached, plain) > 0.1  # a reused non-detached graph would give the plain gradient

    e = alignnet.explain(compiled, x, 3)
    assert _rel(e.weights, alignnet.explain(model, x, 3).weights) < 1e-5
    assert _rel(e.weights[:, :3] - e.weights[:, 3:], plain) > 0.1
    assert _rel(e.weights[:, :3] - e.weights[:, 3:], detached) < 1e-5


def test_issue_23_a_no_grad_forward_then_explain():
    """The failing sequence of the issue, at its smallest: a compiled forward without gradients (a
    prediction), then an explanation. It raised "The differentiated Tensor at index 0 appears to not
    have been used in the graph" (the AddInverse hook's output was an output of the compiled graph,
    not its input), while explaining first happened to work (a probe's exception split the graph)."""
    model = _model("bcos_cifar10_9l")
    x = _images(1)
    counter = _counter()
    compiled = torch.compile(model, backend=counter)
    with torch.no_grad():
        compiled(x)
    e = alignnet.explain(compiled, x)
    eager = alignnet.explain(model, x)
    assert _rel(e.weights, eager.weights) < 1e-5 and e.completeness_error() < 1e-5
    assert counter.frame_count >= 2  # the prediction's graph and the explanation's


def test_cause_a_hooked_tensor_inside_a_compiled_graph_cannot_be_differentiated_to():
    """Why the issue's error appeared: a tensor captured by a hook *inside* a compiled graph is another output
    of the graph's single autograd node, so the logits do not depend on it in autograd's eyes.
    :func:`recording_encodings` computes the encoding between two graphs, where gradients reach it."""
    model = _model("bcos_cifar10_9l")
    for p in model.parameters():
        p.requires_grad_(False)
    x = _images(1).requires_grad_(True)
    compiled = torch.compile(model, backend="aot_eager")
    captured = []
    handle = model.encode.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = compiled(x)
    finally:
        handle.remove()
    assert captured and captured[0].shape == (1, 6, 32, 32)
    with pytest.raises(RuntimeError, match="appears to not have been used in the graph"):
        torch.autograd.grad(logits[0, 0], captured[0])
    with recording_encodings(compiled) as encodings:
        logits = compiled(x)
    (g,) = torch.autograd.grad(logits[0, 0], encodings[0])
    xx = torch.cat([x, 1 - x], 1).detach().requires_grad_(True)
    expected = torch.autograd.grad(model.logit_layer(model.pool(model.features(xx)))[0, 0], xx)[0]
    assert _rel(g, expected) < 1e-5
    assert not model.encode.record  # restored


def test_layer_explanations_and_layerwise_maps_of_a_compiled_model_run_eagerly():
    model = _model("bcos_cifar10_9l")
    x = _images()
    counter = _counter()
    compiled = torch.compile(model, backend=counter)
    got = alignnet.explain(compiled, x, layer="features.3", channel=2)
    eager = alignnet.explain(model, x, layer="features.3", channel=2)
    assert torch.equal(got.weights, eager.weights) and got.weights.abs().sum() > 0
    maps, eager_maps = layer_contributions(compiled, x[:1], 3), layer_contributions(model, x[:1], 3)
    assert [n for n, _ in maps] == [n for n, _ in eager_maps] and len(maps) == 9
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(maps, eager_maps, strict=True))
    assert counter.frame_count == 0  # hooks and a compiled graph do not mix: nothing was compiled


def test_fullgraph_and_in_place_compiled_models():
    model = _model("bcos_cifar10_9l")
    x = _images()
    eager = alignnet.explain(model, x)
    # fullgraph=True forbids the encoding's graph break: the explanation runs eagerly, correctly
    counter = _counter()
    full = torch.compile(model, backend=counter, fullgraph=True)
    got = alignnet.explain(full, x)
    assert torch.equal(got.weights, eager.weights) and counter.frame_count == 0
    with torch.no_grad():
        assert _rel(full(x), model(x)) < 1e-5 and counter.frame_count >= 1
    # model.compile() compiles the module's own call in place
    torch._dynamo.reset()
    counter = _counter()
    model.compile(backend=counter)
    try:
        got = alignnet.explain(model, x)
        assert counter.frame_count >= 1
        assert _rel(got.weights, eager.weights) < 1e-5 and got.completeness_error() < 1e-5
    finally:
        model._compiled_call_impl = None


def test_recording_encodings_does_not_change_eager_values():
    model = _model("bcos_cifar10_9l")
    x = _images()
    with torch.no_grad():
        expected = model(x)
        with recording_encodings(model) as encodings:
            got = model(x)
    assert torch.equal(got, expected)
    assert len(encodings) == 1 and torch.equal(encodings[0], torch.cat([x, 1 - x], 1))
    assert not any(m.record for m in model.modules() if isinstance(m, AddInverse))


def test_eager_explanations_do_not_load_the_compiler():
    """Importing torch._dynamo takes 1-3 s: an eager explanation (a command-line run) must not pay it."""
    code = (
        "import sys, torch, alignnet\n"
        "from alignnet.layers import AddInverse, BcosConv2d, GlobalAvgPool2d, LogitLayer\n"
        "net = torch.nn.Sequential(AddInverse(), BcosConv2d(6, 4, 3), GlobalAvgPool2d(), LogitLayer())\n"
        "e = alignnet.explain(net, torch.rand(1, 3, 8, 8))\n"
        "assert e.weights.shape == (1, 6, 8, 8) and e.completeness_error() < 1e-5\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_inductor_explanation_equals_eager():
    """The default backend end to end (float32, relative 1e-5), on a 3-layer net: inductor builds C++
    kernels, about 15 s per graph for this net on a loaded 2-core machine, a minute for a CIFAR net."""
    torch.manual_seed(0)
    model = tiny_bcos().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model)
    got, eager = alignnet.explain(compiled, x), alignnet.explain(model, x)
    with torch.no_grad():
        assert _rel(got.logits, model(x)) < 1e-5  # the compiled forward
    assert _rel(got.weights, eager.weights) < 1e-5
    assert got.completeness_error() < 1e-5
    assert _rel(got.weights[:, :3] - got.weights[:, 3:], _plain_gradient(model, x, got.targets)) > 0.1


def _plain_gradient(model, x, targets):
    xx = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(xx).gather(1, targets[:, None]).sum(), xx)[0]
