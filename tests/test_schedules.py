"""Every schedule against values computed by hand at chosen steps."""

import math

import pytest

from tunelog.spec.schedules import Schedule, schedule_names


def lr(name, step, **kw):
    base = dict(peak_lr=1.0, total_steps=110, warmup_steps=10)
    base.update(kw)
    return Schedule(name=name, **base).lr_at(step)


def test_all_named_schedules_exist():
    assert set(schedule_names()) >= {
        "constant",
        "linear",
        "cosine",
        "warmup_cosine",
        "cosine_with_restarts",
        "polynomial",
        "onecycle",
        "step_anneal",
    }


@pytest.mark.parametrize("name", ["constant", "linear", "cosine", "polynomial", "step_anneal"])
def test_linear_warmup_reaches_peak_at_warmup_end(name):
    assert lr(name, 1) == pytest.approx(0.1)
    assert lr(name, 5) == pytest.approx(0.5)
    assert lr(name, 10) == pytest.approx(1.0)


def test_constant_holds_peak():
    assert lr("constant", 60) == 1.0 and lr("constant", 110) == 1.0


def test_linear_decays_to_end_lr():
    # post-warmup span 100 steps: step 60 is halfway
    assert lr("linear", 60, end_lr=0.2) == pytest.approx(0.6)
    assert lr("linear", 110, end_lr=0.2) == pytest.approx(0.2)


def test_cosine_halfway_and_end():
    assert lr("cosine", 60, end_lr=0.0) == pytest.approx(0.5)
    assert lr("cosine", 35, end_lr=0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr("warmup_cosine", 110, end_lr=0.1) == pytest.approx(0.1)


def test_cosine_without_warmup_starts_at_peak():
    s = Schedule("cosine", peak_lr=2e-4, total_steps=101)
    assert s.lr_at(1) == pytest.approx(2e-4)
    assert s.lr_at(51) == pytest.approx(1e-4)  # halfway from step 1 to step 101
    assert s.lr_at(101) == pytest.approx(0.0)


def test_cosine_with_restarts_jumps_back_to_peak():
    # 2 cycles of 50 steps after warmup: step 35 is mid-cycle 1, step 60 is the restart, 85 mid-cycle 2
    assert lr("cosine_with_restarts", 35, num_cycles=2) == pytest.approx(0.5)
    assert lr("cosine_with_restarts", 60, num_cycles=2) == pytest.approx(1.0)
    assert lr("cosine_with_restarts", 85, num_cycles=2) == pytest.approx(0.5)
    assert lr("cosine_with_restarts", 110, num_cycles=2) == pytest.approx(0.0)


def test_polynomial_power_two():
    assert lr("polynomial", 60, power=2.0, end_lr=0.0) == pytest.approx(0.25)
    assert lr("polynomial", 85, power=2.0, end_lr=0.5) == pytest.approx(0.5 + 0.5 * 0.0625)


def test_onecycle_rises_from_peak_over_div_factor():
    start = 1.0 / 25
    assert lr("onecycle", 5) == pytest.approx(start + (1 - start) * 0.5)  # halfway up the cosine
    assert lr("onecycle", 10) == pytest.approx(1.0)
    assert lr("onecycle", 60, end_lr=0.0) == pytest.approx(0.5)


def test_step_anneal_multiplies_at_each_anneal_step():
    kw = dict(anneal_steps=(50, 80), anneal_rate=0.3)
    assert lr("step_anneal", 49, **kw) == pytest.approx(1.0)
    assert lr("step_anneal", 50, **kw) == pytest.approx(0.3)
    assert lr("step_anneal", 79, **kw) == pytest.approx(0.3)
    assert lr("step_anneal", 80, **kw) == pytest.approx(0.09)


def test_fastspeech_shaped_schedule_hand_values():
    s = Schedule(
        "step_anneal",
        peak_lr=1e-4,
        total_steps=900_000,
        warmup_steps=8000,
        anneal_steps=(200_000, 400_000, 600_000),
        anneal_rate=0.5,
    )
    assert s.lr_at(1000) == pytest.approx(1.25e-5)
    assert s.lr_at(8000) == pytest.approx(1e-4)
    assert s.lr_at(100_000) == pytest.approx(1e-4)
    assert s.lr_at(300_000) == pytest.approx(5e-5)
    assert s.lr_at(500_000) == pytest.approx(2.5e-5)


def test_milestones_include_warmup_anneals_and_last():
    s = Schedule("step_anneal", peak_lr=1.0, total_steps=1000, warmup_steps=100, anneal_steps=(500, 2000))
    assert s.milestones() == [1, 100, 250, 500, 750, 1000]


def test_steps_outside_range_are_clamped():
    s = Schedule("linear", peak_lr=1.0, total_steps=10, end_lr=0.0)
    assert s.lr_at(0) == s.lr_at(1)
    assert s.lr_at(50) == s.lr_at(10) == 0.0


def test_noam_peaks_at_warmup_then_decays_as_inverse_sqrt():
    s = Schedule("noam", peak_lr=1.0, total_steps=10_000, warmup_steps=100, anneal_steps=(5000,), anneal_rate=0.5)
    assert s.lr_at(50) == pytest.approx(0.5)
    assert s.lr_at(100) == pytest.approx(1.0)
    assert s.lr_at(400) == pytest.approx(0.5)  # sqrt(100/400)
    assert s.lr_at(4900) == pytest.approx(math.sqrt(100 / 4900))
    assert s.lr_at(6400) == pytest.approx(0.5 * 0.125)
