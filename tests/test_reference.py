"""Import of a state-spaces/s4 S4D layer: same outputs as the reference formula."""
import math

import pytest
import torch
import torch.nn.functional as F

import edgessm as es


def _reference_state_dict(H=6, N=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_dt = torch.rand(H, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)
    C = torch.randn(H, N // 2, 2, generator=g) * 0.7
    return {"kernel.log_dt": log_dt, "kernel.C": C,
            "kernel.log_A_real": torch.log(0.5 * torch.ones(H, N // 2)) + 0.1 * torch.randn(H, N // 2, generator=g),
            "kernel.A_imag": math.pi * torch.arange(N // 2).repeat(H, 1).float(),
            "D": torch.randn(H, generator=g),
            "output_linear.0.weight": torch.randn(2 * H, H, 1, generator=g) / math.sqrt(H),
            "output_linear.0.bias": torch.randn(2 * H, generator=g) * 0.1}


def _reference_forward(sd, u):
    """The reference layer, written from its documented math: (B, H, L) -> (B, H, L)."""
    sd = {k: v.double() for k, v in sd.items()}
    L = u.shape[-1]
    dt = torch.exp(sd["kernel.log_dt"])
    C = torch.view_as_complex(sd["kernel.C"])
    A = -torch.exp(sd["kernel.log_A_real"]) + 1j * sd["kernel.A_imag"]
    dtA = A * dt[:, None]
    K = dtA[..., None] * torch.arange(L, dtype=torch.float64)
    C = C * (torch.exp(dtA) - 1.0) / A
    K = 2 * torch.einsum("hn,hnl->hl", C, torch.exp(K)).real
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
    y = y + u * sd["D"][:, None]
    y = F.gelu(y)
    y = F.conv1d(y, sd["output_linear.0.weight"], sd["output_linear.0.bias"])
    return F.glu(y, dim=-2)


def test_same_outputs_and_streaming():
    sd = _reference_state_dict()
    block = es.from_reference_s4d({k: v.double() for k, v in sd.items()})
    u = torch.randn(2, 6, 300, dtype=torch.float64)
    want = _reference_forward(sd, u)
    with torch.no_grad():
        got = block(u.transpose(1, 2)).transpose(1, 2)
        state = block.init_state(2)
        steps = []
        for t in range(300):
            y, state = block.step(u[:, :, t], state)
            steps.append(y)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(torch.stack(steps, -1), want, rtol=1e-9, atol=1e-9)


def test_float32_state_dict():
    sd = _reference_state_dict(seed=1)
    block = es.from_reference_s4d(sd)
    u = torch.randn(1, 6, 100)
    with torch.no_grad():
        got = block(u.transpose(1, 2)).transpose(1, 2).double()
    torch.testing.assert_close(got, _reference_forward(sd, u.double()), rtol=1e-4, atol=1e-5)


def test_bad_state_dicts():
    sd = _reference_state_dict()
    with pytest.raises(es.CheckpointError, match="missing key"):
        es.from_reference_s4d({k: v for k, v in sd.items() if k != "D"})
    bad = dict(sd, D=torch.zeros(5))
    with pytest.raises(es.CheckpointError, match="shape"):
        es.from_reference_s4d(bad)
    bad = dict(sd, D=torch.full((6,), float("nan")))
    with pytest.raises(es.CheckpointError, match="NaN"):
        es.from_reference_s4d(bad)


def test_cli_import(tmp_path):
    from edgessm import io
    from edgessm.cli import main
    sd = _reference_state_dict()
    torch.save({"model." + k: v for k, v in sd.items()}, tmp_path / "ref.pt")
    assert main(["import-s4d", str(tmp_path / "ref.pt"), str(tmp_path / "blk"), "--prefix", "model.",
                 "--json"]) == 0
    block = io.load_block(tmp_path / "blk")
    u = torch.randn(1, 6, 50)
    with torch.no_grad():
        got = block(u.transpose(1, 2)).transpose(1, 2).double()
    torch.testing.assert_close(got, _reference_forward(sd, u.double()), rtol=1e-4, atol=1e-5)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["import-s4d", str(tmp_path / "junk.pt"), str(tmp_path / "x")]) == 2
