"""The deploy pipeline (edgessm.deploy) and what targets declare: typed configs parsed once,
capabilities instead of probes, the run record's figures."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

import edgessm as es
from edgessm import targets
from edgessm.deploy import Checkpoint, DeployRun, deploy, deploy_dict
from edgessm.errors import ConfigError
from edgessm.targets import Capabilities, Cost, Program, Target, TargetConfig, register

from conftest import needs_mnist

SRC = Path(es.__file__).resolve().parent
BUILTIN = ("cpu", "fixed", "loihi2", "crossbar")

# what the pipeline must not do to find out what a target or a program can do
PROBES = [
    (r"inspect\.signature", "inspects a signature"),
    (r"\bhasattr\(", "asks hasattr"),
    (r"except\s*\(?[^:]*\bTypeError\b", "catches TypeError"),
    (r"getattr\(\s*(tgt|target|targets|program|prog|T)\b", "getattr on a target or a program"),
    (r"""\btarget\s*[!=]=\s*["'](cpu|fixed|loihi2|crossbar)["']""", "special-cases a target by name"),
]

# lines that match a pattern but touch no target: (file, line)
NOT_PROBES = {("cli/common.py", "except (TypeError, ValueError):")}   # jsonable: a value as a float


def _pipeline_files():
    files = sorted((SRC / "deploy").glob("*.py")) + sorted((SRC / "cli").glob("*.py"))
    return files + [SRC / "demo.py", SRC / "targets" / "base.py", SRC / "targets" / "config.py",
                    SRC / "train" / "prepare.py"]


def probes_in(text: str) -> list[str]:
    return [why for pat, why in PROBES if re.search(pat, text)]


def test_the_probe_patterns_catch_probes():
    assert probes_in('params = inspect.signature(tgt.compile).parameters') == ["inspects a signature"]
    assert probes_in('if check and not hasattr(program, "check"):') == ["asks hasattr"]
    assert probes_in("try:\n    c = p.cost(mode='x')\nexcept TypeError:\n    pass") == ["catches TypeError"]
    assert probes_in('stochastic = getattr(tgt, "stochastic", False)') == ["getattr on a target or a program"]
    assert probes_in('if target != "cpu":') == ["special-cases a target by name"]
    assert probes_in("cfg = tgt.config_class.from_sets(args.set)") == []


def test_the_pipeline_does_not_probe_targets():
    found = []
    for p in _pipeline_files():
        assert p.is_file(), p
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if (str(p.relative_to(SRC)), line.strip()) in NOT_PROBES:
                continue
            for why in probes_in(line):
                found.append(f"{p.relative_to(SRC)}:{n}: {why}: {line.strip()}")
    assert not found, "\n".join(found)


# ---- declarations ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_every_target_declares_a_config_class_and_capabilities(name):
    t = targets.get(name)
    assert issubclass(t.config_class, TargetConfig) and t.config_class is not TargetConfig
    assert dataclasses.is_dataclass(t.config_class) and t.config_class.TARGET == name
    assert isinstance(t.capabilities, Capabilities)
    assert t.capabilities.cost_modes and t.capabilities.cost_modes[0] == "token"
    cfg = t.config_class()
    assert cfg.validate() is cfg
    assert t.config_class.from_sets([]) == cfg


def test_declared_capabilities():
    caps = {n: targets.get(n).capabilities for n in BUILTIN}
    assert [n for n, c in caps.items() if c.stochastic] == ["crossbar"]
    assert {n for n, c in caps.items() if c.supports_check} == {"fixed", "loihi2"}
    assert {n for n, c in caps.items() if c.needs_calibration} == {"fixed", "loihi2", "crossbar"}
    assert [n for n, c in caps.items() if c.hw_training] == ["crossbar"]
    assert caps["cpu"].cost_modes == ("token",) and caps["loihi2"].cost_modes == ("token", "pipelined")


def test_sets_are_parsed_once_into_typed_fields():
    L = targets.get("loihi2").config_class
    cfg = L.from_sets(["max_chips=2", "energy-synop-j=1e-12", "sigma_delta_threshold=0"])
    assert cfg.max_chips == 2 and isinstance(cfg.max_chips, int)
    assert cfg.energy_synop_j == 1e-12 and cfg.sigma_delta_threshold == 0
    assert dataclasses.replace(cfg, max_chips=3).max_chips == 3 and cfg.replace(max_chips=4).max_chips == 4
    with pytest.raises(ConfigError, match=r"unknown option 'warp' for the loihi2 target; known: .*max_chips"):
        L.from_sets(["warp=1"])
    with pytest.raises(ConfigError, match="option max_chips must be"):
        L.from_sets(["max_chips=0"])
    with pytest.raises(ConfigError, match="option max_chips must be of type int"):
        L.from_sets(["max_chips=many"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        L.from_sets(["max_chips"])
    with pytest.raises(ConfigError, match="option energy_mac_j must be"):
        targets.get("fixed").config_class.from_sets(["energy_mac_j=-1"])
    with pytest.raises(ConfigError, match="option backend must be one of auto, c, numpy"):
        targets.get("fixed").config_class.from_sets(["backend=fortran"])
    with pytest.raises(ConfigError, match="option engine must be one of fast, torch"):
        targets.get("cpu").config_class.from_sets(["engine=gpu"])
    with pytest.raises(ConfigError, match="option max_chips must be of type int"):
        L().replace(max_chips="2.5")
    with pytest.raises(ConfigError, match="option max_chips must be"):
        dataclasses.replace(cfg, max_chips=0)           # every construction is checked
    with pytest.raises(ConfigError, match="option max_chips must be of type int"):
        L(max_chips="2")                                  # typed inside the library: no text


def test_spec_is_the_field_each_target_declares():
    fixed = targets.get("fixed").config_class().with_spec("w4")
    assert fixed.quant_spec.name == "w4" and fixed.spec_value is fixed.quant_spec
    loihi = targets.get("loihi2").config_class.from_sets(["quant_spec=ternary"])
    assert loihi.spec_value.name == "ternary"
    xb = targets.get("crossbar").config_class().with_spec("ideal")
    assert xb.device.noise == 0 and xb.spec_value is xb.device
    with pytest.raises(ConfigError, match="the cpu target takes no spec"):
        targets.get("cpu").config_class().with_spec("w4")
    with pytest.raises(es.UnknownNameError, match="unknown quantization spec"):
        targets.get("fixed").config_class().with_spec("nope")
    with pytest.raises(es.UnknownNameError, match="unknown crossbar device"):
        targets.get("crossbar").config_class().with_spec("nope")


def test_crossbar_instances_and_overrides():
    X = targets.get("crossbar").config_class
    cfg = X.from_sets(["adc_bits=6", "noise=false"])
    assert cfg.overrides() == {"adc_bits": 6, "noise": 0} and cfg.seed is None
    assert [cfg.instance(k).seed for k in range(3)] == [0, 1, 2]
    fixed = cfg.replace(seed=7)
    assert [fixed.instance(k).seed for k in range(3)] == [7, 7, 7]
    dev = cfg.resolve(es.targets.crossbar.load_device("default"), {"weight_bits": 2})
    assert dev.adc_bits == 6 and dev.noise == 0 and dev.weight_bits == 2
    with pytest.raises(ConfigError, match="option seed must be of type int"):
        X.from_sets(["seed=x"])


def test_compile_from_python_takes_typed_values_or_command_line_text():
    m = es.SequenceModel.from_preset("neuromorphic", d_model=8, d_state=4, n_layers=1)
    X = torch.randn(4, 8, 1)
    a = targets.get("loihi2").compile(m, "loihi2", calibration=X, max_chips=2)
    b = targets.get("loihi2").compile(m, "loihi2", calibration=X, max_chips="2")
    assert a.config == b.config and a.config.max_chips == 2
    c = targets.get("loihi2").build(m, a.config, X)
    assert c.config is a.config and c.spec_name() == "loihi2"


# ---- a target added from outside: the pipeline uses only what it declares ----------------------
@dataclasses.dataclass
class ToyConfig(TargetConfig):
    TARGET = "toy"
    seed: int | None = dataclasses.field(default=None, metadata={"rule": es.fields.Rule(int, ge=0)})
    gain: float = dataclasses.field(default=1.0, metadata={"rule": es.fields.Rule(float, gt=0)})

    def instance(self, k):
        return self if self.seed is not None else self.replace(seed=k)


class ToyProgram(Program):
    target = "toy"

    def __init__(self, model, cfg, calibration):
        self.model, self.cfg, self.calibration = model, cfg, calibration
        self.d_input, self.d_output = model.config.d_input, model.config.d_output

    def init_state(self, batch=1):
        return None

    def step(self, x_t, state):
        raise NotImplementedError

    def run(self, X):   # predicts class `seed` for every sample
        Y = torch.zeros(X.shape[0], X.shape[1], self.d_output)
        Y[..., self.cfg.seed % self.d_output] = 1.0
        return Y

    def resources(self):
        return {"cores": 1, "seed": self.cfg.seed}

    def cost(self, tokens=1, mode="token"):
        return Cost(1e-9 * self.cfg.gain, 1e-6, 1e6, 1e-3, mode=mode)


SEEN = []


@pytest.fixture(scope="module")
def toy():
    @register("toy")
    class ToyTarget(Target):
        config_class = ToyConfig
        capabilities = Capabilities(needs_calibration=True, stochastic=True, cost_modes=("token", "burst"))

        def build(self, model, config, calibration=None):
            SEEN.append((config, calibration))
            return ToyProgram(model, config, calibration)
    yield ToyTarget
    from edgessm.targets import base
    base._REGISTRY.pop("toy", None)


def test_a_target_without_a_declared_config_is_refused():
    with pytest.raises(TypeError, match="config_class"):
        @register("bare")
        class Bare(Target):
            def build(self, model, config, calibration=None):
                raise AssertionError


@needs_mnist
def test_the_pipeline_runs_a_registered_target_by_its_declaration(toy):
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=8, d_state=4, n_layers=1)
    ckpt = Checkpoint.from_model(m, "toy-model")
    SEEN.clear()
    run = deploy(ckpt, "toy", ToyConfig.from_sets(["gain=2"]), task="smnist", limit=6, trials=3, calibrate=5)
    assert isinstance(run, DeployRun)
    assert [c.seed for c, _ in SEEN] == [0, 1, 2] and all(isinstance(c.seed, int) for c, _ in SEEN)
    assert all(cal is not None and cal.shape[0] == 5 for _, cal in SEEN)   # declared needs_calibration
    d = run.to_dict()
    assert list(d) == ["model", "target", "task", "n", "accuracy", "trials", "accuracy_trials", "accuracy_std",
                       "resources", "cores", "energy_per_token_j", "latency_per_token_s",
                       "throughput_tokens_per_s", "power_w", "cost", "cost_burst", "wall_s"]
    assert d["model"] == "toy-model" and d["n"] == 6 and d["trials"] == 3
    assert d["accuracy"]["trials"] == run.accuracies and d["accuracy"]["mean"] == pytest.approx(run.accuracy)
    assert d["cost_burst"]["mode"] == "burst" and d["energy_per_token_j"] == pytest.approx(2e-9)
    with pytest.raises(ConfigError, match="no reference to check against"):
        deploy(ckpt, "toy", task="smnist", limit=2, check=True)
    with pytest.raises(ConfigError, match="takes a ToyConfig"):
        deploy(ckpt, "toy", targets.get("cpu").config_class(), task="smnist", limit=2)
    SEEN.clear()
    deploy(ckpt, "toy", ToyConfig(seed=4), task="smnist", limit=2, trials=2)
    assert [c.seed for c, _ in SEEN] == [4, 4]


@needs_mnist
def test_run_record_matches_the_dict_form_and_a_quantized_checkpoint_needs_no_calibration():
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=8, d_state=4, n_layers=1)
    from edgessm.data import load_task
    q = es.quant.quantize(m, "loihi2", calibration=load_task("smnist", "train", limit=8).x)
    ckpt = Checkpoint.from_model(q, "q")
    assert ckpt.quantized and ckpt.quant_spec == "loihi2"
    run = deploy(ckpt, "loihi2", task="smnist", limit=3, check=True)
    d = run.to_dict()
    assert d["mismatches"] == 0 and d["spec"] == "loihi2" and d["cores"] == run.resources["cores"]
    assert "cost_pipelined" in d and d["stats"]["stream_tokens"] > 0
    e = deploy_dict(q, "loihi2", "smnist", 3, check=True, name="q")
    for k in d:
        if k != "wall_s":
            assert e[k] == d[k], k
    fixed = deploy(ckpt, "fixed", task="smnist", limit=3)
    assert fixed.spec == "loihi2" and fixed.trials == 1 and not fixed.stochastic
