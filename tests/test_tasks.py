"""Task types own what a model's outputs mean; a model asks its task instead of switching on a name."""

import numpy as np
import pytest
from scipy.special import softmax

from autogenome_sc._names import TASKS
from autogenome_sc.train import Classification, Embedding, Regression, task_type


def test_one_task_type_per_name():
    assert [task_type(name).name for name in TASKS] == list(TASKS)
    with pytest.raises(ValueError, match="Unknown task 'ranking'; expected one of classification, regression"):
        task_type("ranking")


def test_classification_outputs_are_calibrated_class_probabilities():
    out = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32) * 5
    pred, p = Classification().postprocess(out, temperature=2.0)
    np.testing.assert_allclose(p, softmax(out / 2.0, axis=1), rtol=1e-5)
    assert (pred == out.argmax(axis=1)).all()  # a temperature never changes the label
    assert Classification().n_out(["a", "b", "c"], 100) == 3
    with pytest.raises(ValueError, match="needs its classes"):
        Classification().n_out(None, 100)
    m = Classification().metrics(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    assert m["accuracy"] == 0.75 and Classification().headline(m).startswith("accuracy 0.750, macro-F1 ")


def test_regression_maps_back_to_the_targets_scale():
    out = np.array([[0.0], [1.0], [-2.0]], np.float32)
    pred, p = Regression().postprocess(out, target_mean=10.0, target_std=3.0)
    np.testing.assert_allclose(pred, [10.0, 13.0, 4.0])
    assert p is None
    assert Regression().n_out(None, 100) == 1
    m = Regression().metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]), 0)
    assert m["r2"] == pytest.approx(1.0) and Regression().headline(m).startswith("R2 1.000")


def test_an_embedding_has_no_predictions_and_nothing_to_explain():
    assert Embedding().n_out(None, 765) == 765 and not Embedding().explains
    assert Classification().explains and Regression().explains
    with pytest.raises(ValueError, match="embedding model .*no predictions; use `model.embed`"):
        Embedding().postprocess(np.zeros((2, 3)))
    assert Embedding().headline({"test_elbo": -12.345}) == "ELBO -12.35 per cell"


def test_names_are_spelled_once():
    """Every registry agrees with autogenome_sc/_names.py."""
    from autogenome_sc import _names
    from autogenome_sc.data._matrix import PREPROCESSING
    from autogenome_sc.model._model import _GROUPS
    from autogenome_sc.nn import MODELS, VAE_MODELS
    from autogenome_sc.search import MODES

    assert tuple(PREPROCESSING) == tuple(_GROUPS) == _names.INPUT_KINDS
    # rrfcn: what ENAS finds, trees: what the trees mode fits; loaded by name, never trained by ag.tl.train
    assert set(MODELS) == {*_names.NETWORKS, "rrfcn", "trees"}
    assert tuple(VAE_MODELS) == _names.VAE_MODELS
    assert (
        set(_names.BUILTIN_MODES) <= set(MODES)
        and _names.mode_names()[: len(_names.BUILTIN_MODES)] == _names.BUILTIN_MODES
    )
    with pytest.raises(TypeError, match="abstract"):
        __import__("autogenome_sc.train", fromlist=["TaskType"]).TaskType()
