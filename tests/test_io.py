"""Checkpoints: round trips, shipped names, corrupt and mismatched files."""
import json

import pytest
import torch

import edgessm as es
from edgessm import io


def _net(**kw):
    torch.manual_seed(0)
    return es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4,
                                        n_layers=2, **kw).eval()


def test_round_trip(tmp_path):
    net = _net()
    es.save(net, tmp_path / "m", metrics={"accuracy": 0.5})
    back = es.load(tmp_path / "m")
    x = torch.randn(2, 20, 2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), back(x), rtol=0, atol=0)
    assert back.config == net.config and back.metrics == {"accuracy": 0.5}
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format"] == "edgessm-model" and "torch" in meta["versions"]
    assert not list(tmp_path.glob("m/*.tmp"))


def test_no_pickle_on_disk(tmp_path):
    es.save(_net(), tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]


def test_corrupt_weights(tmp_path):
    es.save(_net(), tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(es.CheckpointError, match="checksum"):
        es.load(tmp_path / "m")
    w.write_bytes(b"garbage")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta.pop("weights_sha256")
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(es.CheckpointError, match="safetensors"):
        es.load(tmp_path / "m")


def test_corrupt_json_and_missing(tmp_path):
    es.save(_net(), tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(es.CheckpointError, match="not valid JSON"):
        es.load(tmp_path / "m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(es.CheckpointError, match="model.json is missing"):
        es.load(tmp_path / "empty")
    with pytest.raises(es.UnknownNameError, match="shipped models"):
        es.load("no-such-model")


def test_other_config_leaves_model_unchanged(tmp_path):
    es.save(_net(), tmp_path / "m")
    other = es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4, n_layers=3)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(es.CheckpointError, match="n_layers"):
        es.load(tmp_path / "m", other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_tensor_shape_mismatch(tmp_path):
    es.save(_net(), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["config"]["d_state"] = 8
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(es.CheckpointError, match="does not fit"):
        es.load(tmp_path / "m")


def test_block_round_trip(tmp_path):
    from edgessm.ssm import Block
    b = Block(6, 4, activation="gelu", mixing="glu", residual=False, norm="none").eval()
    io.save_block(b, tmp_path / "b")
    b2 = io.load_block(tmp_path / "b")
    x = torch.randn(1, 9, 6)
    with torch.no_grad():
        torch.testing.assert_close(b(x), b2(x), rtol=0, atol=0)


def test_one_field_converter_for_configs_options_and_devices():
    from edgessm.fields import coerce
    assert coerce("x", "1e3", int) == 1000 and coerce("x", "0.5", float) == 0.5
    assert coerce("x", 3, float) == 3.0 and isinstance(coerce("x", 3, float), float)
    assert coerce("x", "yes", bool) is True and coerce("x", "0", bool) is False
    assert coerce("x", "true", int) == 1            # crossbar 0/1 flags from the command line
    assert coerce("x", 4.0, int) == 4
    for value, want in (("1.5", int), ("nan", int), ("inf", int), ("maybe", bool), (True, int),
                        (1, bool), ("abc", float), (2.5, int)):
        with pytest.raises(es.ConfigError, match="x must be of type"):
            coerce("x", value, want)
    with pytest.raises(es.ConfigError, match="must be of type int"):
        coerce("[train] epochs", "9", int, strings=False)   # TOML values come typed
    # the crossbar device and the fixed-point target refuse the same value the same way
    from edgessm.targets.crossbar.device import parse_options
    with pytest.raises(es.ConfigError, match="must be of type int"):
        parse_options({"array_rows": "64.5"})
    assert parse_options({"noise": False}).noise == 0     # TOML true/false for the 0/1 flags
