"""Learning-rate factors, time-budget planning (with a fake clock) and sizes from the data."""

import math

import pytest
import torch

from detr_irpe.data.sizing import sizes_from_data
from detr_irpe.training.budget import (
    CALIBRATION_STEPS,
    EVALUATIONS,
    FIT_SECONDS,
    MARGIN,
    REPORT_SECONDS,
    SETTLE_STEPS,
    SHORTEST_LAST_EPOCH,
    Plan,
    TimeBudget,
    spread_evaluations,
)
from detr_irpe.training.optimizer import COSINE_FLOOR, LrFactor


def test_cosine_factor_ends_and_middle():
    f = LrFactor(total=100, warmup=0)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(COSINE_FLOOR + (1 - COSINE_FLOOR) / 2)
    assert f(100) == pytest.approx(COSINE_FLOOR)
    assert f(500) == pytest.approx(COSINE_FLOOR)  # past the end: stays at the floor
    assert all(f(n) > f(n + 1) for n in range(99))


def test_warmup_ramp_and_step_drop():
    f = LrFactor(total=100, warmup=10, drop=0.8)
    assert [f(n) for n in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert f(79) == pytest.approx(1.0) and f(80) == pytest.approx(0.1)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _budget(clock, minutes=10.0, steps_per_epoch=50, eval_images=0):
    factor = LrFactor(total=1, warmup=0)
    b = TimeBudget(minutes, start=1000.0, steps_per_epoch=steps_per_epoch, batch_size=4,
                   eval_images=eval_images, factor=factor, verbose=False, clock=clock)
    return b, factor


def _steps(budget, clock, n, seconds):
    for _ in range(n):
        clock.now += seconds
        budget.step_done()


def test_first_plan_fills_the_budget_at_the_measured_speed():
    clock = Clock()
    clock.now += 40.0  # start-up before training
    b, factor = _budget(clock)
    _steps(b, clock, SETTLE_STEPS + CALIBRATION_STEPS, 0.5)
    eval_seconds = 2.0  # no validation images: COCOeval's fixed part only
    left = 600 - (clock.now - 1000) - MARGIN * 600 - REPORT_SECONDS - 4 * eval_seconds
    steps = math.floor(SETTLE_STEPS + CALIBRATION_STEPS + left / 0.5)  # 1038 here
    assert steps % 50 >= SHORTEST_LAST_EPOCH * 50  # a case with a shortened last epoch
    epochs = math.ceil(steps / 50)
    assert (b.plan.epochs, b.plan.last_steps) == (epochs, steps % 50) and epochs > 10
    assert factor.total == steps
    assert b.plan.eval_every == math.ceil(epochs / 4)
    assert b.plan.evaluates(epochs - 1)


def test_the_box_quality_fit_is_kept_free_in_the_plan():
    totals = {}
    for fit_images in (0, 240):
        clock = Clock()
        factor = LrFactor(total=1, warmup=0)
        b = TimeBudget(10.0, start=1000.0, steps_per_epoch=1, batch_size=4, eval_images=0,
                       factor=factor, verbose=False, clock=clock, fit_images=fit_images)
        _steps(b, clock, SETTLE_STEPS + CALIBRATION_STEPS, 0.5)
        totals[fit_images] = factor.total
    # the fit: inference on 240 images at a third of a 0.5 s step per 4 images, then
    # FIT_SECONDS; both in steps of 0.5 s (the floor may take one step more)
    fit_steps = (240 * 0.5 / 4 / 3 + FIT_SECONDS) / 0.5
    assert totals[0] - totals[240] in (math.floor(fit_steps), math.ceil(fit_steps))


def _run(budget, clock, step_seconds) -> list[int]:
    """Train as ``training/recipe.py`` does (re-plan after each epoch's training, then evaluate if
    due); ``step_seconds(epoch)``: each step's time in that epoch.  Returns the epochs
    evaluated."""
    evaluated, epoch = [], 0
    while epoch < budget.plan.epochs:
        _steps(budget, clock, budget.plan.steps_in(epoch, budget.steps_per_epoch),
               step_seconds(epoch))
        budget.epoch_done(epoch)
        if budget.plan.evaluates(epoch):
            clock.now += 3.0
            budget.evaluated(3.0)
            evaluated.append(epoch)
        epoch += 1
    return evaluated


def test_a_slower_machine_shortens_the_plan_and_it_still_ends_in_time():
    clock = Clock()
    b, factor = _budget(clock)
    after_epoch_0 = []

    def step_seconds(epoch):  # from epoch 1 on every step takes twice as long
        if epoch == 1:
            after_epoch_0.append(b.plan.epochs)
        return 0.5 if epoch == 0 else 1.0

    _run(b, clock, step_seconds)
    first = after_epoch_0[0]
    assert b.plan.epochs < first
    assert factor.total == (b.plan.epochs - 1) * 50 + b.plan.steps_in(b.plan.epochs - 1, 50)
    assert clock.now + REPORT_SECONDS <= b.deadline


@pytest.mark.parametrize("minutes", [10.0, 10.3, 10.6, 10.9])
def test_the_run_uses_its_budget_up_to_a_short_last_epoch(minutes):
    """Whatever the budget, training stops less than SHORTEST_LAST_EPOCH of an epoch (plus a step)
    before the time the plan keeps free for the margin and the end of the run; whole
    epochs alone would leave up to one epoch unused."""
    clock = Clock()
    b, _ = _budget(clock, minutes=minutes)
    _run(b, clock, lambda epoch: 0.5)
    unused = b.deadline - MARGIN * 60 * minutes - REPORT_SECONDS - clock.now
    assert 0 <= unused < (SHORTEST_LAST_EPOCH * 50 + 1) * 0.5, (unused, b.plan)


@pytest.mark.parametrize("fraction,last", [(SHORTEST_LAST_EPOCH / 2, None), (0.6, 30)])
def test_a_short_last_epoch_is_left_out_and_a_longer_one_cut_to_fit(fraction, last):
    """After epoch 0 the plan is re-made in steps from its measured time: the steps that fit
    beyond whole epochs make a shortened last epoch, unless they are fewer than SHORTEST_LAST_EPOCH
    of an epoch (an epoch started for a handful of steps is not worth its start)."""
    clock = Clock()
    b, factor = _budget(clock)  # 10 min, 50 steps per epoch, no validation images
    calibration = SETTLE_STEPS + CALIBRATION_STEPS
    _steps(b, clock, calibration, 0.5)
    whole = b.plan.epochs
    # After epoch 0, with every step of it taking s seconds, the time left holds
    # (600 - fixed costs) / s - 50 more steps: pick s so that 50 * (whole + fraction) fit.
    fixed = MARGIN * 600 + REPORT_SECONDS + EVALUATIONS * 2.0
    s = (600 - fixed) / (50 * (whole + fraction) + 0.05)
    _steps(b, clock, 50 - calibration, (50 * s - calibration * 0.5) / (50 - calibration))
    b.epoch_done(0)
    assert (b.plan.epochs, b.plan.last_steps) == (whole + (last is not None), last)
    assert factor.total == 50 * whole + (last or 0)


def test_evaluations_spread_over_the_epochs_left():
    assert spread_evaluations([], 0, 16, 4) == [3, 7, 11, 15]  # every 4th, as --eval_every 4
    assert spread_evaluations([], 0, 13, 4) == [3, 6, 9, 12]
    assert spread_evaluations([3, 7], 8, 12, 2) == [3, 7, 9, 11]  # re-planned after epoch 7
    assert spread_evaluations([2], 5, 6, 3) == [2, 5]  # more wanted than epochs left


@pytest.mark.parametrize("speeds", [(0.5, 1.0, 0.5), (0.5, 0.3, 0.6), (0.4, 0.4, 0.25)])
def test_re_plans_keep_the_number_of_evaluations_and_evaluate_the_last_epoch(speeds):
    """A machine whose speed changes twice during the run (each third of the first plan at
    its own step time): the plan changes, and the run still evaluates EVALUATIONS times,
    the last after its last epoch, and ends in time."""
    clock = Clock()
    b, _ = _budget(clock, minutes=10.0, steps_per_epoch=30)
    _steps(b, clock, SETTLE_STEPS + CALIBRATION_STEPS, speeds[0])
    first, plans = b.plan.epochs, set()

    def step_seconds(epoch):
        plans.add(b.plan.epochs)
        return speeds[min(2, 3 * epoch // first)]

    evaluated = _run(b, clock, step_seconds)
    assert len(plans) > 1, "the speeds must change the plan for this test to mean anything"
    assert len(evaluated) == EVALUATIONS and evaluated[-1] == b.plan.epochs - 1, evaluated
    assert clock.now + REPORT_SECONDS <= b.deadline


def test_an_epoch_added_at_the_end_moves_the_last_evaluation():
    """The planned last epoch runs faster than the ones before, enough for one more: it is
    not evaluated, the new last one is (no two evaluations back to back at the end)."""
    clock = Clock()
    b, _ = _budget(clock, minutes=10.0, steps_per_epoch=30)
    _steps(b, clock, SETTLE_STEPS + CALIBRATION_STEPS, 0.5)
    first, before = b.plan.epochs, []

    def step_seconds(epoch):  # the last three epochs of the first plan run faster
        if epoch < first - 3:
            return 0.5
        before.append(before[0] if before else b.plan.epochs)  # the plan at the speed-up
        return 0.2

    evaluated = _run(b, clock, step_seconds)
    last_planned = before[0] - 1
    assert b.plan.epochs > last_planned + 1
    assert last_planned not in evaluated and evaluated[-1] == b.plan.epochs - 1, evaluated
    assert len(evaluated) == EVALUATIONS


def test_a_plan_survives_the_checkpoint_and_old_plans_still_load(tmp_path):
    """A resumed budgeted run keeps its plan: the evaluation epochs go through a checkpoint
    (loaded with weights_only), and a plan saved before they existed evaluates every
    ``eval_every`` epochs as it did."""
    plan = Plan(epochs=13, eval_every=4, eval_epochs=[3, 6, 9, 12], last_steps=17)
    torch.save({"plan": plan.to_dict()}, tmp_path / "c.pth")
    again = Plan(**torch.load(tmp_path / "c.pth", weights_only=True)["plan"])
    assert again == plan and [e for e in range(13) if again.evaluates(e)] == [3, 6, 9, 12]
    assert again.steps_in(12, 50) == 17 and again.steps_in(11, 50) == 50
    old = Plan(**{"epochs": 13, "eval_every": 4})
    assert [e for e in range(13) if old.evaluates(e)] == [3, 7, 11, 12]


def test_a_budget_shorter_than_one_epoch_still_trains_one():
    clock = Clock()
    b, _ = _budget(clock, minutes=0.1)
    _steps(b, clock, SETTLE_STEPS + CALIBRATION_STEPS, 1.0)
    assert b.plan.epochs == 1


def test_sizes_follow_the_training_set():
    # shorter sides 120, 130, ..., 200 (in either dimension) and one outsized 1000: the
    # 90th percentile (nearest rank 9 of 10) is 200, the outlier left out
    sides = [(s, 300) if s % 20 else (300, s) for s in range(120, 201, 10)] + [(1200, 1000)]
    images = [{"id": i, "width": w, "height": h} for i, (w, h) in enumerate(sides)]
    annotations = [{"image_id": 1}] * 7 + [{"image_id": 2}] * 3
    options, reason = sizes_from_data(images, annotations)
    assert options["val_size"] == 200
    assert options["train_scales"] == [160, 184, 200, 224, 240]  # 180 -> 184, 220 -> 224 (half up)
    assert options["max_size"] == 333
    assert options["num_queries"] == 15  # 2 x 7 = 14, up to a multiple of 5
    assert "10 training images" in reason and "at most 7 objects" in reason
    assert "120-1000 px (90th percentile 200)" in reason


def test_the_zoom_scales_the_sizes_that_follow_the_data():
    images = [{"id": 0, "width": 200, "height": 240}, {"id": 1, "width": 300, "height": 200}]
    options, reason = sizes_from_data(images, [{"image_id": 0}], zoom=1.4)
    assert options["val_size"] == 280  # the percentile 200, times 1.4
    # 0.8 .. 1.2 x 280 = 224, 252, 280, 308, 336; 252 and 308 round half up to 256 and 312
    assert options["train_scales"] == [224, 256, 280, 312, 336]
    assert options["max_size"] == 467  # 280 x 1333 / 800 = 466.6
    assert options["num_queries"] == 10  # the objects do not zoom
    assert "90th percentile 200, zoomed 1.4x" in reason


def test_the_evaluation_size_is_one_of_the_training_scales():
    # the generated shapes' 90th percentile, 118 px, zoomed 1.4x: 165.2 -> 168, a multiple
    # of 8 as the training scales are, so that evaluation meets a size it was trained at
    images = [{"id": 0, "width": 118, "height": 125}]
    options, _ = sizes_from_data(images, [{"image_id": 0}], zoom=1.4)
    assert options["val_size"] == 168
    assert options["train_scales"] == [136, 152, 168, 184, 200]
    assert options["max_size"] == 280  # 168 x 1333 / 800
    for side in range(40, 400, 7):
        for zoom in (1.0, 1.15, 1.4):
            for multiple, step in ((1, 8), (16, 16), (12, 24)):  # 24: a multiple of 8 and 12
                options, _ = sizes_from_data([{"id": 0, "width": side, "height": 999}],
                                             [{"image_id": 0}], zoom=zoom, multiple=multiple)
                sizes = [options["val_size"], *options["train_scales"]]
                assert all(size % step == 0 for size in sizes), (side, zoom, multiple, sizes)
                assert options["val_size"] in options["train_scales"], (side, zoom, multiple)


def test_sizes_for_a_size_multiple_are_the_sizes_the_resize_makes():
    # 165.2 px is 10.3 cells of 16: 160, and the training scales 0.8-1.2 x 160 in cells
    images = [{"id": 0, "width": 118, "height": 125}]
    options, _ = sizes_from_data(images, [{"image_id": 0}], zoom=1.4, multiple=16)
    assert options["val_size"] == 160
    assert options["train_scales"] == [128, 144, 160, 176, 192]


def test_few_objects_still_get_ten_queries():
    options, _ = sizes_from_data([{"id": 0, "width": 64, "height": 64}], [{"image_id": 0}])
    assert options["num_queries"] == 10
