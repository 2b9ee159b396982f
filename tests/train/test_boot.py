"""BOOT (Gu et al. 2023): the bootstrapping target is one teacher DDIM step written in the signal
y = (x - sigma eps) / alpha, and a short data-free distillation on an exact Gaussian mixture moves
the one-step student onto the teacher's ODE endpoints."""

import pytest
import torch

import timestepper as ts
from timestepper.bench.gmm import GaussianMixture
from timestepper.train.boot import BootStudent, boot_distill, boot_edges, boot_loss, boot_sample, boot_target
from timestepper.train.networks import MLP

VP = ts.VPDiscreteSchedule.from_betas()


def _gmm():
    return GaussianMixture.random(2, 8, seed=0)


def _student(seed=0, dim=2):
    torch.manual_seed(seed)
    return BootStudent(MLP(dim=dim, hidden=32, depth=2), VP)


def test_target_is_one_teacher_ddim_step_by_hand():
    gmm = _gmm()
    teacher = gmm.denoiser(VP, "epsilon", shared_time=False)
    student = _student()
    edges = boot_edges(VP, intervals=4)
    assert edges.count == 5 and float(edges.end[-1]) == VP.t_data == -1.0
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    index = torch.tensor([1, 2, 3, 4, 0])
    target, w = boot_target(student, teacher, eps, edges, index)
    grid = ts.make_grid(VP, 4, "logsnr").t
    e = eps.double()
    for b, j in enumerate(index.tolist()):
        if j == 0:  # boundary: the teacher's data prediction at the initial state x_T = eps
            want = gmm.posterior_mean_at(e[b : b + 1], VP.alpha(grid[0]), VP.sigma(grid[0]))[0]
            assert float(w[b]) == 1.0
        else:  # DDIM in x from x_t = alpha_t y_t + sigma_t eps, read back as y_s
            t, s = grid[j - 1], grid[j]
            at, st = float(VP.alpha(t)), float(VP.sigma(t))
            as_, ss = (1.0, 0.0) if j == 4 else (float(VP.alpha(s)), float(VP.sigma(s)))
            with torch.no_grad():
                y_t = student(eps[b : b + 1], t).double()[0]
            x_t = at * y_t + st * e[b]
            x0 = gmm.posterior_mean_at(x_t[None], at, st)[0]
            x_s = as_ * x0 + ss * (x_t - at * x0) / st
            want = (x_s - ss * e[b]) / as_
            lam = lambda u: float(VP.log_snr(u))  # noqa: E731
            delta = 1.0 if j == 4 else 1.0 - torch.exp(torch.tensor(lam(t) - lam(s))).item()
            assert float(w[b]) == pytest.approx(1.0 / delta**2, rel=1e-5)
        torch.testing.assert_close(target[b].double(), want, rtol=1e-4, atol=1e-4)


def test_short_distillation_moves_the_student_onto_the_teacher_endpoints():
    teacher = _gmm().denoiser(VP, "epsilon", shared_time=False)
    z = torch.randn(1000, 2, generator=torch.Generator().manual_seed(9))
    ref = ts.sample(teacher, z, "ddim", 16)  # the fixed point of 16-interval bootstrapping

    def err(x):
        return float((x - ref).pow(2).sum(1).mean())

    student = _student()
    before = err(boot_sample(student, z))
    res = boot_distill(teacher, student, (2,), prediction="eps", iterations=100, batch_size=128, lr=3e-3,
                       intervals=16)
    after = err(boot_sample(res.student, z))
    one_step_teacher = err(ts.sample(teacher, z, "ddim", 1))
    assert len(res.losses) == 100 and res.losses[-1] < res.losses[0]
    assert before > 1.0
    assert after < 0.1 * before
    assert after < 0.1 * one_step_teacher  # one student call beats one teacher DDIM step by far


def test_few_step_sampling_spends_one_student_and_k_teacher_calls():
    gmm = _gmm()
    inner = gmm.denoiser(VP, "epsilon")
    calls = []

    def counted(x, t):
        calls.append(1)
        return inner(x, t)

    teacher = ts.Denoiser(counted, VP, "epsilon")
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    x = boot_sample(_student(), z, teacher, teacher_steps=3)
    assert x.shape == z.shape and len(calls) == 3
    assert boot_sample(_student(), z).shape == z.shape


def test_a_teacher_of_another_prediction_type_is_refused_naming_both():
    teacher = _gmm().denoiser(VP, "v_prediction", shared_time=False)
    with pytest.raises(ValueError, match="its Denoiser predicts 'v_prediction' but prediction='epsilon'"):
        boot_distill(teacher, _student(), (2,), prediction="eps", iterations=1)
    with pytest.raises(ValueError, match="unknown prediction 'noise'"):
        boot_distill(teacher, _student(), (2,), prediction="noise", iterations=1)
    with pytest.raises(TypeError, match="teacher must be a timestepper Denoiser"):
        boot_distill(lambda x, t: x, _student(), (2,), prediction="eps", iterations=1)


def test_bad_shapes_and_arguments():
    gmm = _gmm()
    teacher = gmm.denoiser(VP, "epsilon", shared_time=False)
    with pytest.raises(ValueError, match="shape must be the non-empty tuple"):
        boot_distill(teacher, _student(), [], prediction="eps", iterations=1)
    with pytest.raises(ValueError, match="every entry of shape must be an integer >= 1"):
        boot_distill(teacher, _student(), (0,), prediction="eps", iterations=1)
    bad_teacher = ts.Denoiser(lambda x, t: x[:, :1], VP, "epsilon")
    with pytest.raises(ValueError, match=r"teacher output \(4, 1\) must have the state's shape \(4, 2\)"):
        boot_loss(_student(), bad_teacher, torch.randn(4, 2), boot_edges(VP, 4), torch.tensor([1, 2, 3, 4]))
    narrow = BootStudent(MLP(dim=2, hidden=8, depth=1), VP)
    narrow.net.out[-1] = torch.nn.Linear(8, 1)
    with pytest.raises(ValueError, match=r"student output \(4, 1\) must have the noise's shape \(4, 2\)"):
        boot_loss(narrow, teacher, torch.randn(4, 2), boot_edges(VP, 4), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="t must be a scalar or hold one time per sample"):
        _student()(torch.randn(4, 2), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="student must be a BootStudent"):
        boot_distill(teacher, MLP(dim=2), (2,), prediction="eps", iterations=1)
    with pytest.raises(ValueError, match="differs from the teacher's"):
        boot_distill(teacher, BootStudent(MLP(dim=2), ts.VPLinearSchedule()), (2,), prediction="eps", iterations=1)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        boot_distill(teacher, _student(), (2,), prediction="eps", iterations=0)
    with pytest.raises(ValueError, match="teacher_steps > 0 needs teacher="):
        boot_sample(_student(), torch.randn(3, 2), teacher_steps=2)
    with pytest.raises(TypeError, match="noise must be a torch.Tensor"):
        boot_sample(_student(), [[0.0, 1.0]])
