"""The JAX Burgers solver: PDEBench's scheme exactly, second-order convergence to Cole–Hopf, conservation, ICs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ups_jax.data import burgers
from ups_jax.data.initial_conditions import burgers_initial_conditions


def _enable_x64():
    ctx = getattr(jax, "enable_x64", None)          # jax >= 0.8; older: jax.experimental.enable_x64
    if ctx is None:
        from jax.experimental import enable_x64 as ctx
    return ctx(True)


def _pdebench_flux_numpy(u, dx, nu):
    """Transcription of PDEBench's ``bc`` + ``limiting`` + ``flux`` (ghost-cell indexing, float64)."""
    n = u.size
    g = np.zeros(n + 4)
    g[2:n + 2], g[0:2], g[n + 2:n + 4] = u, u[-2:], u[0:2]
    du_l = g[1:n + 3] - g[0:n + 2]
    du_r = g[2:n + 4] - g[1:n + 3]
    du_m = (g[2:n + 4] - g[0:n + 2]) * 0.5
    grad = np.sign(du_m) * (0.5 + 0.5 * np.sign(du_l * du_r)) * np.minimum(
        2.0 * np.minimum(np.abs(du_l), np.abs(du_r)), np.abs(du_m))
    ul, ur = np.zeros_like(g), np.zeros_like(g)
    ul[1:n + 3] = g[1:n + 3] - 0.5 * grad
    ur[1:n + 3] = g[1:n + 3] + 0.5 * grad
    fl, fr = 0.5 * ul ** 2, 0.5 * ur ** 2
    f = 0.5 * (fr[1:n + 2] + fl[2:n + 3] - 0.5 * np.abs(ul[2:n + 3] + ur[1:n + 2]) * (ul[2:n + 3] - ur[1:n + 2]))
    f += -nu / np.pi * (g[2:n + 3] - g[1:n + 2]) / dx
    return f                                       # (n + 1,): f[i] is the flux at the left face of cell i


def _pdebench_step_numpy(u, dt, dx, nu):
    def update(u, u_tmp, dt):
        f = _pdebench_flux_numpy(u_tmp, dx, nu)
        return u - dt / dx * (f[1:] - f[:-1])

    return update(u, update(u, u, 0.5 * dt), dt)


@pytest.fixture(scope="module")
def random_ic():
    x = burgers.cell_centres(64)
    return x, burgers_initial_conditions(jax.random.PRNGKey(3), x, 6, x_min=-1.0, x_max=1.0)


def test_step_matches_pdebench_transcription(random_ic):
    _, u0 = random_ic
    dx, nu = 2 / 64, 0.01
    with _enable_x64():
        u = np.asarray(u0, np.float64)
        for u_i in u:
            dt = float(burgers.stable_dt(jnp.asarray(u_i), dx, nu))
            ours = np.asarray(burgers.step(jnp.asarray(u_i), dt, dx, nu))
            np.testing.assert_allclose(ours, _pdebench_step_numpy(u_i, dt, dx, nu), rtol=0, atol=1e-13)
            assert dt == pytest.approx(min(0.25 * dx / (np.abs(u_i).max() + 1e-8), 0.25 * 0.5 * dx ** 2 / (nu / np.pi)))


def test_convergence_to_cole_hopf():
    """Cell averages vs the exact Cole–Hopf cell averages, u0 = sin(pi x) on (-1, 1), nu = 0.1, t = 0.5.

    Measured (float64) L1 errors 8.98e-4, 2.54e-4, 6.88e-5, 1.80e-5 at nx = 64..512: observed orders
    1.82, 1.88, 1.94 (least-squares slope 1.88), i.e. second order approaching 2 as the front is resolved.
    """
    nu, t_end = 0.1, 0.5
    resolutions = [64, 128, 256, 512]
    errors = []
    with _enable_x64():
        for nx in resolutions:
            u0 = burgers.cole_hopf_cell_averages(nx, 0.0, nu)
            out = burgers.solve(jnp.asarray(u0[None], jnp.float64), dx=2.0 / nx, nu=nu, t_save=[0.0, t_end])
            assert out.dtype == jnp.float64
            exact = burgers.cole_hopf_cell_averages(nx, t_end, nu)
            errors.append(np.mean(np.abs(np.asarray(out[0, -1]) - exact)))
    errors = np.array(errors)
    orders = np.log2(errors[:-1] / errors[1:])
    slope = -np.polyfit(np.log2(resolutions), np.log2(errors), 1)[0]
    assert np.all(np.diff(errors) < 0), errors
    assert np.all(orders > 1.75), orders
    assert slope > 1.8, (slope, orders)
    assert errors[-1] < 3e-5


def test_float32_solution_close_to_exact():
    nx, nu, t_end = 128, 0.1, 0.5
    u0 = burgers.cole_hopf_cell_averages(nx, 0.0, nu)
    out = burgers.solve(jnp.asarray(u0[None], jnp.float32), dx=2.0 / nx, nu=nu, t_save=[0.0, t_end])
    assert out.dtype == jnp.float32
    err = np.mean(np.abs(np.asarray(out[0, -1], np.float64) - burgers.cole_hopf_cell_averages(nx, t_end, nu)))
    assert err < 3e-4                                   # float64 gives 2.54e-4: round-off adds little


def test_cole_hopf_point_values_are_consistent():
    """The reference itself: t = 0 gives the IC, and cell averages of point values agree to O(dx^2)."""
    x = np.linspace(-1, 1, 200, endpoint=False)
    np.testing.assert_allclose(burgers.cole_hopf_solution(x, 0.0, 0.1), np.sin(np.pi * (x + 1)), atol=1e-9)
    gaps = []
    for nx in (256, 512):                               # point value - cell average = dx^2/24 u_xx + O(dx^4)
        centres = burgers.cell_centres(nx, dtype=np.float64)
        point = burgers.cole_hopf_solution(centres, 0.5, 0.1)
        gaps.append(np.max(np.abs(point - burgers.cole_hopf_cell_averages(nx, 0.5, 0.1))))
    assert 3.6 < gaps[0] / gaps[1] < 4.4, gaps


def test_mass_conserved_and_energy_decays(random_ic):
    _, u0 = random_ic
    dx = 2 / 64
    frames = np.asarray(burgers.solve(u0, dx=dx, nu=0.01, t_save=burgers.save_times(0.5)), np.float64)
    assert frames.shape == (6, 51, 64)
    np.testing.assert_array_equal(frames[:, 0], np.asarray(u0))
    mass = frames.sum(axis=2) * dx
    scale = np.abs(frames[:, 0]).sum(axis=1) * dx
    # periodic FV is conservative: only float32 round-off of ~100s of steps (measured 4e-8 relative)
    assert np.max(np.abs(mass - mass[:, :1]) / scale[:, None]) < 1e-6
    energy = (frames ** 2).sum(axis=2) * dx
    assert np.all(np.diff(energy, axis=1) <= 1e-6 * energy[:, :1]), np.diff(energy, axis=1).max()
    assert np.all(energy[:, -1] < energy[:, 0])


def test_single_step_conserves_mass_to_roundoff(random_ic):
    _, u0 = random_ic
    with _enable_x64():
        u = jnp.asarray(np.asarray(u0[0], np.float64))
        div = burgers.flux_divergence(u, 2 / 64, 0.01)
        assert abs(float(jnp.sum(div))) < 1e-12 * float(jnp.sum(jnp.abs(div)))
        new = burgers.step(u, 1e-3, 2 / 64, 0.01)
        assert abs(float(jnp.sum(new) - jnp.sum(u))) < 1e-13 * float(jnp.sum(jnp.abs(u)))


def test_per_sample_nu_and_step_counts(random_ic):
    _, u0 = random_ic
    nus = jnp.array([0.01, 0.01, 0.1, 0.1, 0.01, 0.1])
    frames, steps = burgers.solve(u0, dx=2 / 64, nu=nus, t_save=[0.0, 0.05], return_steps=True)
    single = burgers.solve(u0[2:3], dx=2 / 64, nu=0.1, t_save=[0.0, 0.05])
    np.testing.assert_allclose(frames[2], single[0], rtol=1e-6, atol=1e-6)
    assert steps.shape == (6,) and np.all(np.asarray(steps) > 0)
    with pytest.raises(ValueError, match="increasing"):
        burgers.solve(u0, dx=2 / 64, nu=0.01, t_save=[0.0, 0.0])


def test_grid_and_save_times():
    np.testing.assert_allclose(burgers.cell_centres(4, -1, 1), [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(burgers.cell_centres(1024)[[0, -1]], [-0.99902344, 0.99902344])
    t = burgers.save_times()
    assert t.shape == (201,) and t[0] == 0 and t[-1] == pytest.approx(2.0)


def test_initial_conditions_deterministic():
    x = burgers.cell_centres(64)
    key = jax.random.PRNGKey(2022)
    a = np.asarray(burgers_initial_conditions(key, x, 40, x_min=-1.0, x_max=1.0))
    b = np.asarray(burgers_initial_conditions(key, x, 40, x_min=-1.0, x_max=1.0))
    prefix = np.asarray(burgers_initial_conditions(key, x, 7, x_min=-1.0, x_max=1.0))
    other = np.asarray(burgers_initial_conditions(jax.random.PRNGKey(2023), x, 40, x_min=-1.0, x_max=1.0))
    assert a.shape == (40, 64) and a.dtype == np.float32 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    # sample i depends on (key, i) only (batch sizes compile differently: equal to float32 round-off)
    np.testing.assert_allclose(a[:7], prefix, rtol=0, atol=1e-5)
    assert not np.allclose(a, other)
    assert len({row.tobytes() for row in a}) == 40        # all distinct
    assert np.abs(a).max() <= 4.0 + 1e-6                  # sum of k_tot = 4 amplitudes in [0, 1]
    assert (a < 0).any() and (a > 0).any()


def test_initial_conditions_distribution_features():
    """abs (p=0.1) and the tanh window (p=0.1, bounds mapped into the domain) occur at PDEBench's rates."""
    n = 2000
    for x_min, x_max in ((0.0, 1.0), (-1.0, 1.0)):
        x = burgers.cell_centres(128, x_min, x_max)
        draw = lambda **kw: np.asarray(burgers_initial_conditions(jax.random.PRNGKey(0), x, n, x_min=x_min,
                                                                  x_max=x_max, **kw))
        u, plain = draw(), draw(p_abs=0.0, p_window=0.0)          # same key: same draws, branches switched off
        windowed = ~np.isclose(draw(p_abs=0.0), plain).all(axis=1)
        absolute = ~np.isclose(draw(p_window=0.0), plain).all(axis=1)
        assert 0.08 < windowed.mean() < 0.12 and 0.08 < absolute.mean() < 0.12
        # the window (width 0.01 L) is ~0 within 0.05 L of the ends, ~1 near the middle, never above 1
        length = x_max - x_min
        edge = (x < x_min + 0.05 * length) | (x > x_max - 0.05 * length)
        middle = np.abs(x - (x_min + x_max) / 2) < 0.02 * length
        only_window = draw(p_abs=0.0)[windowed]
        assert np.abs(only_window[:, edge]).max() < 1e-3
        np.testing.assert_allclose(only_window[:, middle], plain[windowed][:, middle], rtol=0, atol=0.03)
        assert np.all(np.abs(only_window) <= np.abs(plain[windowed]) + 1e-6)
        # random sign: both signs equally likely
        assert 0.4 < np.mean(u.mean(axis=1) > 0) < 0.6


def test_advective_scale_reproduces_pre_fix_pdebench_flux():
    """``advective_scale=2`` (PDEBench before fd12554) solves u_t + (u^2)_x = (nu/pi) u_xx, i.e. v = 2u solves the
    standard equation; with a diffusion-limited dt (same steps) the two runs agree to round-off."""
    x = burgers.cell_centres(64)
    u0 = 0.5 * np.sin(np.pi * x)[None].astype(np.float32)          # max|2 u0| = 1: dt_adv > dt_dif at nu = 0.1
    old = burgers.solve(u0, dx=2 / 64, nu=0.1, t_save=[0.0, 0.1, 0.2], advective_scale=2.0)
    new = burgers.solve(2 * u0, dx=2 / 64, nu=0.1, t_save=[0.0, 0.1, 0.2])
    np.testing.assert_allclose(2 * np.asarray(old), np.asarray(new), rtol=0, atol=1e-5)
    assert not np.allclose(old, burgers.solve(u0, dx=2 / 64, nu=0.1, t_save=[0.0, 0.1, 0.2]), atol=1e-3)
