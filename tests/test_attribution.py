"""The attribution registry: every method on the zoo's CIFAR nets, known answers, adapters, errors."""

import pytest
import torch
from torch import nn

import alignnet
from _attr_nets import TemplateNet, blob_images, tiny_bcos, tiny_coda
from alignnet.attribution import EncodedModel, get_attributor, last_spatial_layer, list_attributors, rise_masks
from alignnet.explanation import explain

# cheaper settings for the perturbation methods in the "runs everywhere" test
FAST = {"lime": {"n_samples": 60}, "rise": {"n_masks": 64}, "intgrad": {"n_steps": 8}}
REFUSED = {"guided_backprop"}


def test_registry_lists_the_papers_methods():
    names = set(list_attributors())
    assert {"ours", "grad", "ixg", "intgrad", "deeplift", "guided_backprop", "gradcam"} <= names
    assert {"occlusion5", "occlusion9", "lime", "rise"} <= names


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(0)
    return {n: alignnet.create_model(n, width=0.25).eval() for n in ("bcos_cifar10_9l", "coda_cifar10_9l")}


@pytest.mark.parametrize("model_name", ["bcos_cifar10_9l", "coda_cifar10_9l"])
@pytest.mark.parametrize("method", sorted(set(list_attributors())))
def test_every_method_runs_on_the_zoo(zoo, model_name, method):
    model = zoo[model_name]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if method in REFUSED:
        with pytest.raises(ValueError, match="not defined for this model"):
            get_attributor(method, model)
        return
    a = get_attributor(method, model, **FAST.get(method, {})).attribute(x, torch.tensor([3, 7]))
    assert a.shape == x.shape
    assert torch.isfinite(a).all()
    assert a.abs().sum() > 0  # never silently zeros


@pytest.mark.parametrize("make", [tiny_bcos, tiny_coda])
def test_ours_sums_to_the_logit(make):
    torch.manual_seed(0)
    model = make().double()
    x = torch.rand(3, 3, 12, 12, dtype=torch.float64)
    t = torch.tensor([0, 4, 9])
    a = get_attributor("ours", model).attribute(x, t)
    e = explain(model, x, t)
    torch.testing.assert_close(a.sum((1, 2, 3)) + e.bias, e.outputs, rtol=1e-10, atol=1e-10)
    # the image-space map is the sum of the two encoded channels of each colour
    six = e.weights * e.inputs
    torch.testing.assert_close(a, six[:, :3] + six[:, 3:])


@pytest.mark.parametrize("make", [tiny_bcos, tiny_coda])
def test_deeplift_adapter_is_the_rescale_rule(make):
    """With the zero reference, the rescale rule at dynamic-linear layers gives W(x) x = ours."""
    torch.manual_seed(0)
    model = make().double()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    t = torch.tensor([1, 2])
    deeplift = get_attributor("deeplift", model).attribute(x, t)
    ixg = get_attributor("ixg", model).attribute(x, t)
    torch.testing.assert_close(deeplift, get_attributor("ours", model).attribute(x, t), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(deeplift, ixg)  # captum as is would have given Input x Gradient


def test_gradient_methods_on_a_linear_model_have_known_values():
    model = TemplateNet().double()
    x, y = blob_images(1)
    x = x.double()
    w = model.conv.weight[y]  # (N, 6, 8, 8): the gradient w.r.t. the encoded input
    grad = get_attributor("grad", model).attribute(x, y)
    torch.testing.assert_close(grad, w[:, :3] + w[:, 3:])
    ixg = get_attributor("ixg", model).attribute(x, y)
    enc = torch.cat([x, 1 - x], 1)
    torch.testing.assert_close(ixg, (w * enc)[:, :3] + (w * enc)[:, 3:])
    # Integrated Gradients of a linear function from the zero encoding is exactly Input x Gradient
    torch.testing.assert_close(get_attributor("intgrad", model, n_steps=4).attribute(x, y), ixg)
    torch.testing.assert_close(get_attributor("ours", model).attribute(x, y), ixg)


def test_occlusion_is_the_drop_of_the_logit():
    model = TemplateNet().double()
    x, y = blob_images(1)
    x = x.double()
    a = get_attributor("occlusion5", model, stride=1).attribute(x, y).sum(1)
    for i, c in enumerate(y.tolist()):
        r, q = blob_position_of(c)
        # every 5x5 window that contains a blob pixel removes part of the blob; far pixels see no drop
        far = torch.ones(8, 8, dtype=torch.bool)
        far[max(0, r - 4) : r + 6, max(0, q - 4) : q + 6] = False
        assert torch.all(a[i][far] == 0)
        assert torch.all(a[i, r : r + 2, q : q + 2] > 0)
    # a window fully on the blob removes all of it: the drop is the whole blob sum (12 * strength)
    single = get_attributor("occlusion9", model, size=8, stride=8).attribute(x[:1], y[:1]).sum(1)
    torch.testing.assert_close(single[0, 0, 0], 12 * x[0, 0].max(), rtol=1e-9, atol=1e-9)


def blob_position_of(c):
    from _attr_nets import blob_position

    return blob_position(c)


def test_rise_masks_are_seeded_cached_and_have_the_right_density():
    m1, m2 = rise_masks(200, 32, 32, seed=3), rise_masks(200, 32, 32, seed=3)
    assert m1.shape == (200, 32, 32)
    torch.testing.assert_close(m1, m2)
    assert not torch.equal(m1, rise_masks(200, 32, 32, seed=4))
    assert 0 <= m1.min() and m1.max() <= 1
    assert abs(m1.mean().item() - 0.1) < 0.03
    rise = get_attributor("rise", TemplateNet(), n_masks=32)
    a = rise.masks(8, 8, torch.device("cpu"), torch.float32)
    assert rise.masks(8, 8, torch.device("cpu"), torch.float32) is a


def test_rise_finds_the_evidence_and_batches_like_single_images():
    model = TemplateNet()
    x, y = blob_images(1)
    rise = get_attributor("rise", model, n_masks=400, output="logit", forward_batch=64)
    a = rise.attribute(x, y).sum(1)
    for i, c in enumerate(y.tolist()):
        r, q = blob_position_of(c)
        inside = a[i, r : r + 2, q : q + 2].mean()
        assert inside > a[i].mean()
    single = torch.cat([rise.attribute(x[i : i + 1], y[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(single, rise.attribute(x[:3], y[:3]).reshape(single.shape), rtol=1e-5, atol=1e-5)


def test_lime_gives_the_blob_the_largest_weight():
    model = TemplateNet()
    x, y = blob_images(1, seed=2)
    a = get_attributor("lime", model, n_samples=200).attribute(x[:3], y[:3]).sum(1)
    for i, c in enumerate(y[:3].tolist()):
        r, q = blob_position_of(c)
        assert a[i, r, q] == a[i].max() > 0


def test_lime_leaves_the_global_random_state_and_is_deterministic_per_seed():
    pytest.importorskip("skimage")
    import numpy as np

    model = tiny_bcos().double().eval()
    x, y = blob_images(per_class=1)
    x, y = x[:2].double(), y[:2]
    torch.manual_seed(123)
    np.random.seed(5)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    first = get_attributor("lime", model, n_samples=40, num_features=None).attribute(x, y)
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # LIME reseeded the global generator
    assert np.array_equal(np.random.get_state()[1], numpy_state[1]) and np.random.get_state()[2] == numpy_state[2]
    torch.manual_seed(7)  # another global state: the same maps for the same seed
    again = get_attributor("lime", model, n_samples=40, num_features=None).attribute(x, y)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    other = get_attributor("lime", model, n_samples=40, num_features=None, seed=1).attribute(x, y)
    assert (other - first).abs().max() > 1e-3 * first.abs().max()  # the seed does choose the samples
    # image i uses seed + i: alone or in a batch, its map is the same
    alone = get_attributor("lime", model, n_samples=40, num_features=None).attribute(x[:1], y[:1])
    torch.testing.assert_close(alone, first[:1], rtol=0, atol=0)


def test_gradcam_uses_the_last_spatial_map(zoo):
    x = torch.rand(1, 3, 32, 32)
    assert last_spatial_layer(zoo["coda_cifar10_9l"], x) == "features.8"
    with pytest.raises(ValueError, match="no module named"):
        get_attributor("gradcam", zoo["bcos_cifar10_9l"], layer="nope")


def test_batched_equals_per_image_and_model_state_restored():
    torch.manual_seed(0)
    model = tiny_bcos().train()
    x, t = torch.rand(4, 3, 12, 12), torch.tensor([1, 2, 3, 4])
    for name in ("ours", "grad", "occlusion5"):
        full = get_attributor(name, model).attribute(x, t)
        small = get_attributor(name, model, batch_size=1).attribute(x, t)
        torch.testing.assert_close(full, small, rtol=1e-5, atol=1e-6)
    assert model.training and all(m.training for m in model.modules())


def test_encoded_model_matches_the_model():
    torch.manual_seed(0)
    model = tiny_coda().eval()
    x = torch.rand(2, 3, 12, 12)
    enc = EncodedModel(model)
    torch.testing.assert_close(enc(enc.encode(x)), model(x))
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    assert not EncodedModel(plain).encodes


def test_clear_errors():
    model = tiny_bcos()
    with pytest.raises(ValueError, match="did you mean occlusion"):
        get_attributor("occlusion", model)
    with pytest.raises(ValueError, match="does not take n_step"):
        get_attributor("intgrad", model, n_step=3)
    att = get_attributor("grad", model)
    with pytest.raises(ValueError, match="expects images with 3 channels"):
        att.attribute(torch.rand(1, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="shape"):
        att.attribute(torch.rand(2, 3, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(TypeError, match="integers"):
        att.attribute(torch.rand(2, 3, 8, 8), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        att.attribute(torch.full((1, 3, 8, 8), float("nan")), 0)
    with pytest.raises(ValueError, match="stride"):
        get_attributor("occlusion5", model, stride=7)


@pytest.mark.parametrize("method", ["occlusion5", "occlusion9", "rise", "lime", "intgrad"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_a_bad_forward_batch_is_refused_when_the_method_is_built(method, bad):
    with pytest.raises(ValueError, match=r"forward_batch must be an int >= 1 \(None for the automatic pixel budget\)"):
        get_attributor(method, tiny_bcos(), forward_batch=bad)


@pytest.mark.parametrize("make", [tiny_bcos, tiny_coda])
@pytest.mark.parametrize("method", ["ours", "ixg", "occlusion5", "occlusion9", "rise"])
def test_attribute_maps_equals_one_class_at_a_time(make, method):
    """Several classes per image equal explaining each class separately (ours: one forward pass;
    occlusion and RISE: each perturbed copy evaluated once for all classes, against captum's
    one-class Occlusion and our one-class RISE)."""
    torch.manual_seed(0)
    model = make().double().eval()
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    targets = torch.tensor([[0, 3, 1], [2, 2, 0]])
    attributor = get_attributor(method, model, **({"n_masks": 64} if method == "rise" else {}))
    maps = attributor.attribute_maps(images, targets)
    assert maps.shape == (2, 3, 16, 16)
    for j in range(3):
        single = attributor.attribute(images, targets[:, j]).sum(1)
        # captum's Occlusion computes in float32 even for float64 inputs
        tol = dict(rtol=1e-6, atol=1e-9) if method.startswith("occlusion") else dict(rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(maps[:, j], single, **tol)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        attributor.attribute_maps(images, targets[0])
    with pytest.raises(ValueError, match="non-negative|out of range"):
        attributor.attribute_maps(images, -targets - 1)


@pytest.mark.parametrize("size,stride,shape", [(5, 2, (12, 12)), (9, 2, (13, 11)), (3, 3, (7, 10)), (4, 1, (4, 6))])
def test_occlusion_windows_match_captum(size, stride, shape):
    """Our multi-class occlusion uses captum's windows: on a model that sums its input, the
    attribution of a pixel is the mean size of the windows covering it, as captum computes it."""
    from captum.attr import Occlusion

    x = torch.ones(1, 1, *shape, dtype=torch.float64)
    ref = Occlusion(lambda z: z.flatten(1).sum(1)).attribute(
        x, sliding_window_shapes=(1, size, size), strides=(1, stride, stride), baselines=0.0
    )[0, 0]
    att = get_attributor("occlusion5", tiny_bcos(), size=size, stride=stride)
    windows = att.window_masks(*shape, torch.device("cpu"), torch.float64)  # (P, H, W)
    ours = (windows * windows.sum((1, 2))[:, None, None]).sum(0) / windows.sum(0)
    torch.testing.assert_close(ours, ref.double())  # captum returns float32 here


def test_copies_per_pass_is_a_pixel_budget_unless_given():
    from alignnet.attribution import AUTO_PIXELS, copies_per_pass

    assert AUTO_PIXELS["cpu"] == 1 << 17
    assert copies_per_pass(None, 32, 32, "cpu") == 128 and copies_per_pass(None, 96, 96, "cpu") == 14
    assert copies_per_pass(None, 448, 448, "cpu") == 1  # never zero
    assert copies_per_pass(None, 32, 32, "meta") == AUTO_PIXELS["other"] // 1024  # accelerators: larger batches
    assert copies_per_pass(7, 448, 448, "cpu") == 7
    with pytest.raises(ValueError, match="forward_batch"):
        copies_per_pass(0, 8, 8, "cpu")


@pytest.mark.parametrize("method", ["occlusion5", "occlusion9", "rise", "lime"])
def test_auto_forward_batch_bounds_each_pass_and_keeps_the_maps(method, monkeypatch):
    """With ``forward_batch=None`` every forward pass holds at most the pixel budget's copies (here 4 copies
    of 16x16), and the maps equal those of one large batch (512 copies per pass)."""
    if method == "lime":
        pytest.importorskip("skimage")
    from alignnet.attribution import _base

    model = tiny_bcos().double().eval()
    images, labels = blob_images(per_class=1)
    images, labels = nn.functional.interpolate(images[:3].double(), scale_factor=2), labels[:3]  # 16x16
    big = get_attributor(method, model, forward_batch=512)
    expected, expected_maps = (
        big.attribute(images, labels),
        big.attribute_maps(images, torch.stack([labels, labels.flip(0)], 1)),
    )
    monkeypatch.setitem(_base.AUTO_PIXELS, "cpu", 4 * 256)
    sizes = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    auto = get_attributor(method, model)
    got, got_maps = (
        auto.attribute(images, labels),
        auto.attribute_maps(images, torch.stack([labels, labels.flip(0)], 1)),
    )
    handle.remove()
    assert max(sizes) <= 4 and len(sizes) > 10
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_maps, expected_maps, rtol=1e-10, atol=1e-12)


def test_integrated_gradients_takes_the_pixel_budget_in_path_points(monkeypatch):
    """Integrated Gradients: ``forward_batch=None`` gives at most the budget's path points per pass (4 here;
    at least one per image: 6 for 3 images x 2 classes), with the same maps as 512 points per pass."""
    from alignnet.attribution import _base

    model = tiny_bcos().double().eval()
    images, labels = blob_images(per_class=1)
    images, labels = nn.functional.interpolate(images[:3].double(), scale_factor=2), labels[:3]  # 16x16
    targets = torch.stack([labels, labels.flip(0)], 1)
    big = get_attributor("intgrad", model, n_steps=8, forward_batch=512)
    expected, expected_maps = big.attribute(images, labels), big.attribute_maps(images, targets)
    monkeypatch.setitem(_base.AUTO_PIXELS, "cpu", 4 * 256)
    sizes = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    auto = get_attributor("intgrad", model, n_steps=8)
    got = auto.attribute(images, labels)
    assert [n for n in sizes if n > 1] == [3] * 8  # one path point of each of the 3 images per pass (8 steps)
    sizes.clear()
    got_maps = auto.attribute_maps(images, targets)
    handle.remove()
    assert max(sizes) <= 6 and len(sizes) >= 8
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_maps, expected_maps, rtol=1e-10, atol=1e-12)
