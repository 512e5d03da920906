"""mlscale.electrons.energy_window / finish_density: the density from the fully occupied
sum plus a window of the LDOS equals the full-store density (electrons.density) for every
μ of the bracket, both integration methods and several temperatures; the window's edges
follow from the Fermi function (1 − f resp. f ≤ 2^-52 beyond them)."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale import electrons
from mlscale.errors import MlscaleError
from mlscale.units import KB_EV_PER_K

SHIPPED_E = -4.5 + 0.1 * np.arange(176)  # the shipped model's LDOS energies (eV)


def windowed_density(ldos_pe, window, mu, temperature_K, method):
    summed_p = electrons.weighted_sum(ldos_pe[:, :window.start], window.summed_e)
    return electrons.finish_density(summed_p, ldos_pe[:, window.start:window.stop].copy(),
                                    window, SHIPPED_E, mu, temperature_K, method)


@pytest.mark.parametrize("method", electrons.METHODS)
@pytest.mark.parametrize("temperature_K", [298.0, 1000.0, 3000.0])
def test_windowed_density_equals_the_full_density_across_the_bracket(method, temperature_K):
    rng = np.random.default_rng(3)
    ldos_pe = rng.uniform(0.0, 0.05, (50, SHIPPED_E.size)).astype(np.float32)
    low, high = 7.70, 7.80
    window = electrons.energy_window(SHIPPED_E, low, high, temperature_K, method)
    assert 0 < window.start < window.stop <= SHIPPED_E.size  # 3000 K: up to the top
    for mu in np.linspace(low, high, 5):
        expected = electrons.density(ldos_pe, SHIPPED_E, mu, temperature_K, method)
        got = windowed_density(ldos_pe, window, mu, temperature_K, method)
        # the analytical weights of deep energies carry ~1.5e-12 relative round-off
        # (cancellation in the polylog antiderivatives at |x| ~ 500); the window's sum
        # uses their exact value
        np.testing.assert_allclose(got, expected, rtol=3e-12 if method == "analytical"
                                   else 1e-14, atol=0)


@pytest.mark.parametrize("method", electrons.METHODS)
def test_window_edges_are_where_the_occupation_is_one_resp_zero_to_2_pow_minus_52(method):
    temperature_K, low, high = 298.0, 7.7, 7.8
    kT = KB_EV_PER_K * temperature_K
    window = electrons.energy_window(SHIPPED_E, low, high, temperature_K, method)
    full_e = electrons.full_occupation_weights(SHIPPED_E, method)
    reach = 0.1 if method == "analytical" else 0.0  # a hat reaches one step either side
    # the first energy kept is not fully occupied at μ = low, the last summed one is
    f = electrons.fermi_function
    assert 1 - f(SHIPPED_E[window.start] + reach, low, temperature_K) > 2.0**-52 / 2
    assert 1 - f(SHIPPED_E[window.start - 1] + reach, low, temperature_K) <= 2.0**-52
    assert f(SHIPPED_E[window.stop] - reach, high, temperature_K) <= 2.0**-52
    assert f(SHIPPED_E[window.stop - 1] - reach, high, temperature_K) > 2.0**-52 / 2
    # edges 36.04 k_BT (+ a step) beyond the bracket
    assert SHIPPED_E[window.start - 1] + reach <= low - 36.04 * kT + 1e-12
    np.testing.assert_array_equal(window.summed_e, full_e[:window.start])
    for mu in (low, high):
        w_e = electrons.occupation_weights(SHIPPED_E, mu, temperature_K, method)
        np.testing.assert_allclose(w_e[:window.start], full_e[:window.start], rtol=3e-12)
        assert np.all(w_e[window.stop:] <= 2.0**-52 * full_e[window.stop:])


def test_full_occupation_weights_integrate_one_over_the_grid():
    # hats reach one step beyond either end: ∫ = (last − first) + one step
    energies = np.array([0.0, 0.1, 0.3, 0.6])
    assert electrons.full_occupation_weights(energies).sum() == pytest.approx(0.6 + 0.2)
    np.testing.assert_allclose(electrons.full_occupation_weights(energies, "quadrature"),
                               [0.05, 0.15, 0.25, 0.15])
    # and equal the occupation weights far below μ (x ≈ −2000 here: their round-off grows
    # as x²·2^-52)
    np.testing.assert_allclose(electrons.occupation_weights(energies, 50.0, 298.0),
                               electrons.full_occupation_weights(energies), rtol=2e-11)


@pytest.mark.parametrize("method", electrons.METHODS)
def test_window_of_the_shipped_model_fits_100_bytes_per_point(method):
    """8 bytes of density + 4 per kept float32 energy, for every position of a ±0.05 eV
    bracket (inference.BRACKET_HALF_WIDTH_EV) at 298 K: at most 22 energies (96 bytes)."""
    from mlscale.inference import BRACKET_HALF_WIDTH_EV

    sizes = [electrons.energy_window(SHIPPED_E, mu - BRACKET_HALF_WIDTH_EV,
                                     mu + BRACKET_HALF_WIDTH_EV, 298.0, method).size
             for mu in np.linspace(5.0, 5.1, 41)]
    assert 8 + 4 * max(sizes) <= 100
    # 72 k_BT + the bracket (+ two steps for the hats) wide, so ∝ T at high temperature
    hot = electrons.energy_window(SHIPPED_E, 5.0, 5.1, 1000.0, method).size
    width = 72.08 * KB_EV_PER_K * 1000.0 + 0.1 + (0.2 if method == "analytical" else 0.0)
    assert abs(hot - width / 0.1) <= 1.5


def test_known_fermi_level_and_empty_windows():
    rng = np.random.default_rng(4)
    ldos_pe = rng.uniform(0.0, 0.05, (7, SHIPPED_E.size))
    at = electrons.EnergyWindow.at(SHIPPED_E, 7.0, 298.0)
    assert at.size == 0 and at.contains(7.0) and not at.contains(7.0 + 1e-9)
    summed_p = electrons.weighted_sum(ldos_pe, at.summed_e)
    np.testing.assert_array_equal(
        electrons.finish_density(summed_p, np.zeros((7, 0)), at, SHIPPED_E, 7.0, 298.0),
        electrons.density(ldos_pe, SHIPPED_E, 7.0, 298.0))
    assert not electrons.EnergyWindow.empty().contains(7.0)
    whole = electrons.energy_window(SHIPPED_E, -np.inf, np.inf, 298.0)
    assert (whole.start, whole.stop) == (0, SHIPPED_E.size)


def test_a_fermi_level_outside_the_bracket_or_bad_input_is_an_error():
    window = electrons.energy_window(SHIPPED_E, 7.7, 7.8, 298.0)
    summed_p, window_pw = np.zeros(3), np.zeros((3, window.size), np.float32)
    with pytest.raises(MlscaleError, match="outside the window's bracket"):
        electrons.finish_density(summed_p, window_pw, window, SHIPPED_E, 7.81, 298.0)
    with pytest.raises(MlscaleError, match="needs float64"):
        electrons.finish_density(summed_p, window_pw[:2], window, SHIPPED_E, 7.75, 298.0)
    with pytest.raises(MlscaleError, match="not an interval"):
        electrons.energy_window(SHIPPED_E, 7.8, 7.7, 298.0)
