"""The one epoch driver (train/_epochs.py) as fit uses it: keep-last, stop_after, deadline, a raising callback."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autogenome_sc import config
from autogenome_sc._traces import Traces
from autogenome_sc.data import prepare
from autogenome_sc.nn import build_network
from autogenome_sc.train import fit
from autogenome_sc.train._epochs import EarlyStopping

CFG = config.validate({"trainer": {"max_epochs": 4, "patience": 4}, "models": {"resnet": {"width": 16, "n_blocks": 1}}})


def _problem(counts):
    plain = {"layer": None, "use_raw": False, "split_key": None, "loss": "auto"}  # X as it is, a new split
    data, _ = prepare(counts, "cell_type", data_cfg=CFG.data, rng=np.random.default_rng(0), **plain)
    net = build_network({"model": "resnet", **CFG.models.resnet.model_dump()}, data.n_out)
    return data, net


def _fit(data, net, **kw):
    return fit(net, data, CFG.trainer, CFG.loss, jax.random.key(0), **kw)


def test_keep_last_keeps_the_last_epoch_and_its_validation_outputs(counts):
    data, net = _problem(counts)
    res = _fit(data, net, keep_last=True)
    h = res.history
    assert list(h["epoch"]) == [0, 1, 2, 3] and res.best_epoch == 3
    assert res.best_val_loss == h["val_loss"][-1]
    assert res.val_outputs is not None and res.val_outputs.shape == (4, len(data.idx["val"]), data.n_out)
    assert set(h) == {"epoch", "train_loss", "val_loss", "val_accuracy", "train_seconds"}
    # the same run with early stopping keeps the best epoch; up to the kept epoch the two are the same run
    best = _fit(data, net)
    np.testing.assert_array_equal(best.history["val_loss"], h["val_loss"])
    assert best.best_epoch == int(np.argmin(h["val_loss"])) and best.val_outputs is None


def test_stop_after_deadline_and_a_raising_callback_end_training(counts):
    data, net = _problem(counts)
    assert len(_fit(data, net, stop_after=2).history["epoch"]) == 2
    late = _fit(data, net, deadline=time.perf_counter())  # already passed: the first epoch is the last
    assert late.stopped_at_deadline and len(late.history["epoch"]) == 1 and late.best_epoch == 0
    seen = []

    class Pruned(Exception):
        pass

    def prune(epoch, metrics):
        seen.append((epoch, sorted(metrics)))
        if epoch == 1:
            raise Pruned

    with pytest.raises(Pruned):
        _fit(data, net, callback=prune)
    assert seen == [(0, ["train_loss", "val_accuracy", "val_loss"]), (1, ["train_loss", "val_accuracy", "val_loss"])]


def test_early_stopping_keep_last_mode_records_nothing_as_best_and_stops_on_divergence():
    stop = EarlyStopping(patience=1, keep_last=True)
    for epoch, loss in enumerate([1.0, 0.5, 3.0]):  # a worse last epoch: no early stop, and it is kept
        assert not stop.update(epoch, loss, loss, {"w": jnp.asarray(epoch)})
        assert stop.variables is None  # nothing fetched or kept as "best" on the way
    res = stop.result({"epoch": [0, 1, 2]}, "validation loss")
    assert res.best_epoch == 2 and res.best_val_loss == 3.0 and int(res.variables["w"]) == 2
    diverged = EarlyStopping(keep_last=True)
    assert not diverged.update(0, np.nan, 1.0, {"w": jnp.asarray(0)})
    assert diverged.update(1, np.nan, np.inf, {"w": jnp.asarray(1)})
    with pytest.raises(FloatingPointError, match="the training loss became inf at epoch 2"):
        diverged.result({"epoch": [0, 1]}, "validation loss")


def test_traces_count_compilations_by_key():
    traces = Traces()
    double = jax.jit(traces.counted(lambda x: 2 * x, "double"))
    since = traces.watch()
    double(jnp.ones(3))
    double(jnp.zeros(3))  # same shape: no new trace
    double(jnp.ones(4))
    assert since() == {"double": 2}
    assert traces.watch(["double", "other"])() == {"double": 0, "other": 0}
