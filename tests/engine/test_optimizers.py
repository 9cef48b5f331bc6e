"""The first two updates of every optimizer against their closed forms; clipping; schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import OPTIMIZERS, TrainConfig
from engine.optimizers import Hyperparameters, apply, clip_by_global_norm
from engine.trainer import learning_rate_at

LR = 0.1
MU = 0.9


def _two_updates(name: str, hp: Hyperparameters) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(6)
    g1, g2 = rng.standard_normal(6), rng.standard_normal(6)
    opt = OPTIMIZERS[name]
    theta = theta0.copy()
    state = opt.init(theta)
    apply(opt, theta, g1, state, 1, LR, hp)
    theta1 = theta.copy()
    apply(opt, theta, g2, state, 2, LR, hp)
    return theta0, g1, g2, np.stack([theta1, theta])


def test_sgd_first_two_updates() -> None:
    theta0, g1, g2, (theta1, theta2) = _two_updates("sgd", Hyperparameters())
    np.testing.assert_allclose(theta1, theta0 - LR * g1, rtol=1e-14)
    np.testing.assert_allclose(theta2, theta0 - LR * g1 - LR * g2, rtol=1e-14)


def test_momentum_first_two_updates() -> None:
    theta0, g1, g2, (theta1, theta2) = _two_updates("momentum", Hyperparameters(momentum=MU))
    # v1 = -lr g1; v2 = mu v1 - lr g2; theta_t = theta_{t-1} + v_t
    np.testing.assert_allclose(theta1, theta0 - LR * g1, rtol=1e-14)
    np.testing.assert_allclose(theta2, theta0 - LR * g1 - MU * LR * g1 - LR * g2, rtol=1e-13)


def test_nesterov_first_two_updates() -> None:
    theta0, g1, g2, (theta1, theta2) = _two_updates("nesterov", Hyperparameters(momentum=MU))
    # v_t = mu v_{t-1} - lr g_t; theta_t = theta_{t-1} + mu v_t - lr g_t
    v1 = -LR * g1
    expected1 = theta0 + MU * v1 - LR * g1
    v2 = MU * v1 - LR * g2
    np.testing.assert_allclose(theta1, expected1, rtol=1e-13)
    np.testing.assert_allclose(theta2, expected1 + MU * v2 - LR * g2, rtol=1e-13)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_first_two_updates(weight_decay: float) -> None:
    b1, b2, eps = 0.8, 0.95, 1e-3  # large enough that each term shows in the result
    hp = Hyperparameters(beta1=b1, beta2=b2, epsilon=eps, weight_decay=weight_decay, n_decay=4)
    theta0, g1, g2, (theta1, theta2) = _two_updates("adam", hp)
    decay = np.where(np.arange(6) < 4, 1 - LR * weight_decay, 1.0)  # only the first n_decay entries
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    expected1 = decay * theta0 - LR * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
    expected2 = decay * expected1 - LR * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    np.testing.assert_allclose(theta1, expected1, rtol=1e-13)
    np.testing.assert_allclose(theta2, expected2, rtol=1e-13)


def test_adam_first_step_moves_each_parameter_by_about_lr() -> None:
    theta0, g1, _, (theta1, _) = _two_updates("adam", Hyperparameters())
    np.testing.assert_allclose(np.abs(theta1 - theta0), LR, rtol=1e-6)
    assert (np.sign(theta0 - theta1) == np.sign(g1)).all()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_slots_match_shape_and_dtype(name: str) -> None:
    theta = np.ones(5, dtype=np.float32)
    state = OPTIMIZERS[name].init(theta)
    for value in state.values():
        assert value.shape == theta.shape and value.dtype == np.float32
    apply(OPTIMIZERS[name], theta, np.full(5, 0.5, dtype=np.float32), state, 1, 0.01)
    assert theta.dtype == np.float32 and (theta < 1).all()


def test_clip_by_global_norm() -> None:
    g = np.array([3.0, 4.0])
    assert clip_by_global_norm(g, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(g, [3.0, 4.0])
    clip_by_global_norm(g, 1.0)
    np.testing.assert_allclose(g, [0.6, 0.8])


def test_learning_rate_schedules() -> None:
    base = {"learning_rate": 0.1, "lr_gamma": 0.5, "lr_step_size": 2, "epochs": 4}
    step = TrainConfig.from_dict({**base, "lr_schedule": "step"})
    assert [learning_rate_at(step, e) for e in (1, 2, 3, 4, 5)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    expo = TrainConfig.from_dict({**base, "lr_schedule": "exponential"})
    assert [learning_rate_at(expo, e) for e in (1, 2, 3)] == pytest.approx([0.1, 0.05, 0.025])
    cosine = TrainConfig.from_dict({**base, "lr_schedule": "cosine"})
    expected = [0.1 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [learning_rate_at(cosine, e) for e in (1, 2, 3, 4)] == pytest.approx(expected)
    assert learning_rate_at(TrainConfig(learning_rate=0.3), 50) == 0.3
