"""The compute device: --device parsing, checks against the machine, and the CPU path's numbers.

The tests pretend the machine has no GPU (or a given number of them) by patching torch's own
queries, so they assert the same things on a laptop, on CI and on a GPU server. What only a real
GPU can show (the numbers there) is measured by benchmarks/gpu_check.py.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from simulator import compute
from simulator.cli import app
from simulator.compute import describe_device, resolve_device
from simulator.config import scenario_from_dict
from simulator.engine import run_scenario
from tests.conftest import tiny_scenario_dict

runner = CliRunner()


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compute, "_cuda_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(compute, "_cuda_count", lambda: 2)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32
    yield
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu "])
def test_cpu_is_always_there(spec: str, no_gpu: None):
    assert resolve_device(spec) == torch.device("cpu")


def test_auto_falls_back_to_the_cpu_without_a_gpu(no_gpu: None):
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_takes_the_gpu_and_makes_it_repeatable(two_gpus: None):
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = True
    assert resolve_device("auto") == torch.device("cuda")
    assert torch.backends.cudnn.deterministic is True
    assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.allow_tf32 is False  # full float32 convolutions
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_a_gpu_index_must_exist(two_gpus: None):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"'cuda:2' asks for GPU 2, but torch sees 2 \(cuda:0 to"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_a_gpu_the_machine_lacks_is_refused_with_the_way_out(spec: str, no_gpu: None):
    with pytest.raises(ValueError, match=rf"device: '{spec}' needs an NVIDIA GPU.*--device cpu"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "mps", ""])
def test_unknown_devices_name_what_is_allowed(spec: str):
    with pytest.raises(ValueError, match=r"is not one of cpu, cuda, cuda:N \(N a GPU index\)"):
        resolve_device(spec)


def test_describe_device_of_the_cpu():
    assert describe_device(torch.device("cpu")) == "cpu"


def test_a_run_records_its_compute_device_and_equals_the_default(no_gpu: None):
    scenario = scenario_from_dict(tiny_scenario_dict(stream__samples_per_device=64))
    default = run_scenario(scenario)
    explicit = run_scenario(scenario, device="auto")  # no GPU: the CPU
    assert default.summary["compute_device"] == explicit.summary["compute_device"] == "cpu"
    for key in ("accuracy", "upload_bytes", "download_bytes", "cloud_steps", "per_device"):
        assert default.summary[key] == explicit.summary[key]


def test_a_run_on_a_missing_gpu_fails_before_any_work(no_gpu: None, monkeypatch):
    import simulator.build as build

    def never(*args, **kwargs):
        raise AssertionError("the dataset was loaded before the device was checked")

    monkeypatch.setattr(build, "create_dataset", never)
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        run_scenario(scenario_from_dict(tiny_scenario_dict()), device="cuda")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("cuda", "--device: 'cuda' needs an NVIDIA GPU"), ("gpu", "--device: 'gpu' is not one of")],
)
def test_cli_run_and_sweep_refuse_a_bad_device_and_write_nothing(
    tmp_path: Path, tiny_yaml: Path, no_gpu: None, spec: str, message: str
):
    out = tmp_path / "never"
    for command in (["run"], ["sweep", "--seeds", "2"]):
        result = runner.invoke(
            app, [*command, str(tiny_yaml), "--out", str(out), "--device", spec, "--no-progress"]
        )
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split())
        assert "Traceback" not in result.output
        assert not out.exists()


@pytest.mark.slow
def test_cli_run_on_the_cpu_records_it(tmp_path: Path, tiny_yaml: Path, no_gpu: None):
    out = tmp_path / "run"
    args = ["run", str(tiny_yaml), "--out", str(out), "--device", "auto", "--no-progress"]
    result = runner.invoke(app, [*args, "--set", "stream.samples_per_device=64"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["compute_device"] == "cpu"
    assert re.search(r"wall time\s+│\s+[\d.]+ s on cpu", result.output)


@pytest.mark.slow
def test_sweep_manifest_records_the_device(tmp_path: Path, tiny_yaml: Path, no_gpu: None):
    out = tmp_path / "sweep"
    args = ["sweep", str(tiny_yaml), "--out", str(out), "--device", "cpu", "--no-progress"]
    result = runner.invoke(app, [*args, "--set", "stream.samples_per_device=64"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["device"] == "cpu" and manifest["counts"] == {"finished": 1}
    run = next(p for p in out.iterdir() if p.is_dir())
    assert json.loads((run / "summary.json").read_text())["compute_device"] == "cpu"


def test_a_download_copied_in_one_transfer_keeps_every_tensor_whole_and_independent():
    from simulator.adaptation.base import cpu_copy, one_transfer

    state = {
        "bn.weight": torch.arange(3.0),
        "bn.running_var": torch.full((2, 2), 7.0),
        "fc.bias": torch.tensor([-1.5]),
    }
    copies = one_transfer(list(state.values()))
    for copy, original in zip(copies, state.values(), strict=True):
        assert copy.shape == original.shape and torch.equal(copy, original)
    copies[0].add_(1)  # no view shares memory with another copy or with the source
    assert torch.equal(state["bn.weight"], torch.arange(3.0))
    assert torch.equal(copies[1], torch.full((2, 2), 7.0))
    cpu = cpu_copy(state)  # on the CPU: plain copies, the same names
    assert list(cpu) == list(state) and all(cpu[k] is not state[k] for k in state)


def test_the_gpu_checks_scenarios_stay_valid(tmp_path: Path):
    # benchmarks/gpu_check.py runs only where a GPU is lent: its scenarios must not rot meanwhile
    import importlib.util

    from policies.selection.family import measure_family
    from simulator.data.datasets import make_synthetic

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    data = make_synthetic(32, split="test", seed=1)
    family = tmp_path / "family.json"
    family.write_text(
        measure_family(
            ["synthetic_edge", "synthetic_teacher"], data.images, data.labels, name="syn"
        ).to_json()
    )
    (tmp_path / "cifar10").mkdir()  # validation checks that the data folder exists
    variants = gpu_check.variants(64, tmp_path / "cifar10", family)
    assert len(variants) >= 10
    for label, data_dict in variants:
        scenario = scenario_from_dict(data_dict)
        assert scenario.stream.samples_per_device == 64, label
