"""The search's small parts on their own: the time budget, the trial record, the choice, the config's cross-field rule."""

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import autogenome_sc as ag
from autogenome_sc.search import Budget, TrialRecord, leaderboard
from autogenome_sc.search._choose import Scored, choose


class Clock:
    """A fake ``time.perf_counter``: it moves only when told to."""

    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_budget_keeps_time_for_cv_and_a_first_epoch():
    clock = Clock()
    cfg = ag.config.validate({"search": {"cv_share": 0.4, "enas_share": 0.5}}).search
    budget = Budget.of(100.0, cfg, clock=clock)
    assert budget.deadline == 200.0 and budget.timed
    need = [10.0]
    budget.keep_for_cv(lambda: need[0])
    clock.now = 110.0  # preparing the data took 10 s: the trials' own deadline counts from their start
    budget.start_trials()
    assert budget.trials_end == 210.0
    assert budget.reserved == 1.25 * 10.0 + 3.0  # a quarter more, and a few seconds
    need[0] = 1000.0
    budget.refresh()
    assert budget.reserved == 40.0  # at most cv_share of the timeout
    clock.now = 169.0  # 169 + 40 < 210: a running trial goes on, and a new one may start
    assert not budget.trials_over() and not budget.trials_over(starting=True)
    for seconds in (1.0, 2.0, 9.0):
        budget.first_epoch_took(seconds)
    assert budget.trials_over(starting=True)  # the median first epoch (2 s) would end past the deadline
    assert not budget.trials_over()
    # ENAS gets half of what is left before the time kept for cross-validation
    assert budget.own_loop_deadline() == 169.0 + 0.5 * (210.0 - 40.0 - 169.0)
    clock.now = 171.0
    assert budget.trials_over() and budget.own_loop_deadline() == 171.0  # nothing left: it must stop now


def test_budget_of_the_selection_has_a_grace():
    clock = Clock(0.0)
    budget = Budget(60.0, grace=0.05, clock=clock)
    assert budget.start == 0.0 and budget.deadline == 60.0 and budget.cv_deadline() == 63.0
    clock.now = 50.0
    assert budget.left() == 10.0
    assert budget.cv_fits(12.5) and not budget.cv_fits(12.6)  # 80% of the guess must fit
    clock.now = 62.9
    assert not budget.cv_overrun() and budget.left() == 0.0  # within 5% of 60 s past the deadline
    clock.now = 63.1
    assert budget.cv_overrun()


def test_an_untimed_budget_never_stops_anything():
    budget = Budget(None, clock=Clock())
    budget.keep_for_cv(lambda: 1e9)
    budget.start_trials()
    budget.first_epoch_took(1e9)
    assert not budget.timed and budget.deadline is None and budget.reserved == 0.0
    assert not budget.trials_over(starting=True) and budget.own_loop_deadline() is None
    assert budget.cv_fits(1e9) and not budget.cv_overrun() and budget.left() == np.inf and budget.cv_deadline() is None


def test_trial_record_round_trips_through_a_study_with_the_stored_keys():
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.enqueue_trial({"x": 0.5}, user_attrs=TrialRecord(portfolio=True).to_attrs())
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    TrialRecord(architecture={"model": "mlp", "widths": [8]}, worker="host:1").write(trial)
    TrialRecord(stopped_by_timeout=True).write(trial)  # written piecewise, as a trial does
    done = TrialRecord(val_loss=0.25, val_accuracy=0.9, best_epoch=2, epochs=3, seconds=1.5, rerun_seconds=0.6)
    done.write(trial)
    study.tell(trial, 0.25)
    frozen = study.trials[0]
    # the keys of journals written before TrialRecord existed, and nothing stored for unset fields
    assert frozen.user_attrs == {
        "ag_portfolio": True, "architecture": {"model": "mlp", "widths": [8]}, "worker": "host:1",
        "stopped_by_timeout": True, "val_loss": 0.25, "val_accuracy": 0.9, "best_epoch": 2, "epochs": 3,
        "seconds": 1.5, "rerun_seconds": 0.6,
    }  # fmt: skip
    back = TrialRecord.from_trial(frozen)
    assert back == TrialRecord(
        architecture={"model": "mlp", "widths": [8]}, worker="host:1", stopped_by_timeout=True, val_loss=0.25,
        val_accuracy=0.9, best_epoch=2, epochs=3, seconds=1.5, rerun_seconds=0.6, portfolio=True,
    )  # fmt: skip
    assert back.rerun_cost == 0.6 and TrialRecord(seconds=2.0).rerun_cost == 2.0 and TrialRecord().rerun_cost == 0.0
    # a surplus trial is left out of the leaderboard; a failed one shows its state
    surplus = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    TrialRecord(surplus=True).write(surplus)
    study.tell(surplus, state=TrialState.FAIL)
    board = leaderboard(study)
    assert list(board["trial"]) == [0] and board.loc[0, "stopped_by_timeout"] == "True"
    assert board.loc[0, "epochs"] == 3 and board.loc[0, "worker"] == "host:1"


def test_choice_on_a_regression_uses_the_loss_alone():
    """Non-integer targets: accuracy and macro-F1 do not apply (they made scikit-learn raise)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=50)
    near, far = (y + 0.1)[:, None], (y + 1.0)[:, None]
    scored = [Scored(0, "mlp", [], far, [3], 0.0), Scored(1, "resnet", [], near, [3], 0.0)]
    for s in scored:
        s.score_on(y, "regression", 1)
    assert scored[1].loss == pytest.approx(0.01) and np.isnan(scored[1].accuracy)
    w, chosen, out = choose(scored, y, "regression", 1, "accuracy_f1")
    assert w.tolist() == [0.0, 1.0] and chosen == "single" and out is near


def test_config_refuses_val_accuracy_with_the_mse_loss_in_one_sentence():
    with pytest.raises(ValueError) as err:
        ag.config.validate({"search": {"metric": "val_accuracy"}, "loss": {"name": "mse"}})
    assert str(err.value) == "search.metric 'val_accuracy' is for classification; use 'val_loss' for regression."
    assert ag.config.validate({"search": {"metric": "val_accuracy"}}).search.metric == "val_accuracy"
