"""save_model / load_model: safetensors with metadata, never unpickling, clear errors; the CLI table."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

import alignnet
from alignnet.cli import main
from alignnet.models import create_model
from alignnet.models.io import load_weights


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("coda_cifar10_9l", width=0.25, temperature=10.0).eval()
    return model, alignnet.save_model(model, tmp_path / "coda.safetensors")


def test_round_trip_rebuilds_architecture_and_weights(saved):
    model, path = saved
    loaded = alignnet.load_model(path)
    assert loaded.model_name == "coda_cifar10_9l"
    assert loaded.model_args == {"width": 0.25, "temperature": 10.0}
    assert loaded.logit_layer.temperature == 10.0 and not loaded.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), model(x))


def test_metadata_is_plain_json(saved):
    from safetensors import safe_open

    _, path = saved
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["alignnet.model"] == "coda_cifar10_9l"
    assert json.loads(meta["alignnet.args"]) == {"temperature": 10.0, "width": 0.25}
    assert meta["alignnet.version"] == alignnet.__version__


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        alignnet.load_model(tmp_path / "nope.safetensors")


def test_corrupt_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        alignnet.load_model(bad)


def test_pickle_is_never_loaded(tmp_path):
    """A pickle whose loading would run code is rejected as 'not safetensors', never unpickled."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (marker.write_text, ("x",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(Evil()))
    torch.save({"w": torch.zeros(2)}, tmp_path / "ckpt.pt")
    for p in (path, tmp_path / "ckpt.pt"):
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            alignnet.load_model(p)
    assert not marker.exists()


def test_missing_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="without alignnet metadata"):
        alignnet.load_model(path)


def test_unknown_model_name_in_metadata(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "renamed.safetensors"
    save_file(model.state_dict(), str(path), metadata={"alignnet.model": "coda_cifar10_9k", "alignnet.args": "{}"})
    with pytest.raises(ValueError, match="unknown model 'coda_cifar10_9k'.*coda_cifar10_9l"):
        alignnet.load_model(path)


def test_bad_args_metadata(saved, tmp_path):
    model, _ = saved
    path = tmp_path / "args.safetensors"
    save_file(model.state_dict(), str(path), metadata={"alignnet.model": "coda_cifar10_9l", "alignnet.args": "{oops"})
    with pytest.raises(ValueError, match="not valid JSON"):
        alignnet.load_model(path)


def test_wrong_architecture_names_first_mismatch(saved, tmp_path):
    model, _ = saved
    # weights of width 0.25 declared as width 0.5: the first layer's rank differs
    path = tmp_path / "wrong.safetensors"
    meta = {"alignnet.model": "coda_cifar10_9l", "alignnet.args": json.dumps({"width": 0.5, "temperature": 10.0})}
    save_file(model.state_dict(), str(path), metadata=meta)
    with pytest.raises(
        ValueError, match=r"'features.0.rank_proj.weight' has shape \(8, 6, 3, 3\) in .* \(16, 6, 3, 3\)"
    ):
        alignnet.load_model(path)


def test_attributes_set_after_construction_are_saved(tmp_path):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = create_model("bcos_cifar10_9l", width=0.25).double().eval()
    model.features[3].b, model.logit_layer.temperature = 1.5, 4.0
    path = alignnet.save_model(model, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        recorded = json.loads(f.metadata()["alignnet.attributes"])
    assert recorded == {"features.3": {"b": 1.5}, "logit_layer": {"temperature": 4.0}}  # only what differs
    loaded = alignnet.load_model(path)
    assert loaded.features[3].b == 1.5 and loaded.features[2].b == 2.0 and loaded.logit_layer.temperature == 4.0
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-13, atol=1e-13)  # float64 saved, float64 loaded


def test_save_refuses_what_its_name_and_arguments_cannot_rebuild(tmp_path):
    path = tmp_path / "m.safetensors"
    model = create_model("bcos_cifar10_9l", width=0.25)
    model.features[8] = torch.nn.Conv2d(64, 10, 1, bias=False)
    with pytest.raises(ValueError, match=r"features.8: 'torch.nn.modules.conv.Conv2d' here, '.*BcosConv2d' when"):
        alignnet.save_model(model, path)
    model = create_model("bcos_cifar10_9l", width=0.25)
    model.logit_layer.temperature = torch.tensor(2.0)  # not a value JSON keeps
    with pytest.raises(ValueError, match=r"logit_layer.temperature: \('tensor', \(\), 'torch.float32'\) here, 1.0"):
        alignnet.save_model(model, path)
    assert not path.exists()


@pytest.mark.parametrize(
    "attributes", [{"logit_layer": {"forward": 1}}, {"logit_layer": {"_parameters": {}}}, {"nope": {"b": 1.0}}]
)
def test_load_sets_only_plain_attributes_of_existing_modules(saved, tmp_path, attributes):
    model, _ = saved
    path = tmp_path / "attrs.safetensors"
    meta = {"alignnet.model": "coda_cifar10_9l", "alignnet.args": json.dumps({"width": 0.25, "temperature": 10.0}),
            "alignnet.attributes": json.dumps(attributes)}  # fmt: skip
    save_file(model.state_dict(), str(path), metadata=meta)
    with pytest.raises(ValueError, match="unusable attributes"):
        alignnet.load_model(path)


def test_load_weights_reports_missing_and_unexpected():
    model = create_model("bcos_resnet20")
    state = dict(model.state_dict())
    missing = dict(state)
    del missing["fc.weight"]
    with pytest.raises(ValueError, match=r"lacks tensor 'fc.weight' of shape \(10, 64, 1, 1\)"):
        load_weights(create_model("bcos_resnet20"), missing)
    extra = dict(state, **{"head.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"has tensor 'head.weight' of shape \(3,\) that the model lacks"):
        load_weights(create_model("bcos_resnet20"), extra)


def test_save_needs_a_registered_model(tmp_path):
    with pytest.raises(ValueError, match="create_model"):
        alignnet.save_model(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_save_refuses_to_overwrite_when_asked(saved):
    model, path = saved
    with pytest.raises(FileExistsError):
        alignnet.save_model(model, path, overwrite=False)


def test_cli_models_table(capsys):
    assert main(["models", "--pattern", "coda_*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["name", "params", "input", "paper"]
    assert out[1].split()[:3] == ["coda_cifar10_9l", "7.78M", "32x32"]
    assert "CVPR 2021" in out[1]
    assert main(["models", "--pattern", "bcos_resnet18", "--num-classes", "10"]) == 0
    assert "11.19M" in capsys.readouterr().out  # 11,693,120 - 990 * 512 = 11,186,240


def test_cli_models_no_match(capsys):
    assert main(["models", "--pattern", "nothing*"]) == 2
    assert "no model matches" in capsys.readouterr().err
