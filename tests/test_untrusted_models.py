"""Model files from elsewhere: checked against the weights before anything is built; never overwritten unasked."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import FAST, synthetic_counts

import autogenome_sc as ag


def _copy(model, tmp_path, name="m"):
    dest = tmp_path / name
    shutil.copytree(model.path, dest)
    return dest


def _edit(path, change):
    meta = json.loads((path / "model.json").read_text())
    change(meta)
    (path / "model.json").write_text(json.dumps(meta))


def _set(where, key, value):
    def change(meta):
        target = meta
        for k in where:
            target = target[k]
        target[key] = value

    return change


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set(["architecture"], "width", 70000), r"architecture.width = 70000 in model.json does not fit"),
        (_set(["architecture"], "width", "abc"), r"architecture.width = 'abc' in model.json must be a number"),
        (_set(["architecture"], "width", -5), r"architecture.width = -5 in model.json does not fit"),
        (_set(["architecture"], "n_blocks", 20000), r"architecture.n_blocks = 20000 in model.json does not fit"),
        (_set(["architecture"], "model", "transformer"), r"unknown model 'transformer'"),
        (_set(["architecture"], "activation", "os.system"), r"unknown activation 'os.system'"),
        (lambda m: m.pop("architecture"), r"has no 'architecture' in its model.json"),
        (lambda m: m.pop("task"), r"has no 'task'"),
        (lambda m: m.pop("var_names"), r"has no 'var_names'"),
        (lambda m: m.pop("preprocessing"), r"has no 'preprocessing'"),
        (lambda m: m.pop("classes"), r"a classification model needs 'classes'"),
        (_set([], "task", "magic"), r"'task' is 'magic'"),
        (lambda m: m.update(var_names=m["var_names"][:-1]), r"scaling has 200 values for 199 genes"),
        (lambda m: m["classes"].reverse(), r"was changed after it was saved: its checksum does not match"),
        (lambda m: m["preprocessing"].update(input="log"), r"its checksum does not match"),
        (_set([], "matrix", {"layer": "counts", "use_raw": True}), r"'matrix' must hold 'layer'"),
        (_set([], "matrix", "raw.X"), r"'matrix' must hold 'layer'"),
    ],
)
def test_a_forged_model_json_is_refused_in_one_sentence(trained, tmp_path, change, match, monkeypatch):
    _, model = trained
    model.architecture = dict(model.architecture)
    path = _copy(model, tmp_path)
    _edit(path, change)
    built = []
    post_init = ag.Model.__post_init__
    monkeypatch.setattr(ag.Model, "__post_init__", lambda self: built.append(1) or post_init(self))
    with pytest.raises(ValueError, match=match):
        ag.read_model(path)
    assert not built  # refused before a Model (and its network, of whatever size) was built


def test_non_finite_and_swapped_weights_are_refused(trained, tmp_path):
    adata, model = trained
    bad = ag.read_model(model.path)
    leaves, tree = jax.tree.flatten(bad.variables)
    leaves[0] = np.full_like(leaves[0], np.nan)  # one array of NaN, as a diverged training leaves it
    bad.variables = jax.tree.unflatten(tree, leaves)
    with pytest.raises(ValueError, match="holds non-finite weights"):
        ag.read_model(bad.save(tmp_path / "nan"))
    # the weights of another model of the same shape: the checksum tells
    other = synthetic_counts(seed=1)
    ag.tl.train(other, "cell_type", config={**FAST, "save": {"path": str(tmp_path / "other")}}, rng=1)
    path = _copy(model, tmp_path, "swapped")
    shutil.copy(tmp_path / "other" / "weights.msgpack", path / "weights.msgpack")
    with pytest.raises(ValueError, match="checksum does not match"):
        ag.read_model(path)


def test_the_id_is_the_checksum_and_a_model_without_one_still_loads(trained, tmp_path):
    adata, model = trained
    meta = json.loads((model.path / "model.json").read_text())
    assert meta["checksum"].startswith("sha256:") and model.id_ == meta["checksum"] == adata.uns["ag"]["model_id"]
    path = _copy(model, tmp_path)
    _edit(path, lambda m: (m.pop("checksum"), m.update(format_version=1)))
    with pytest.warns(UserWarning, match="saved without a checksum"):
        old = ag.read_model(path)
    assert old.id_ is None
    assert (old.predict(adata)["prediction"] == model.predict(adata)["prediction"]).all()


def test_a_second_training_never_replaces_a_saved_model_unasked(tmp_path):
    first, second = synthetic_counts(seed=2), synthetic_counts(seed=3, n_types=3)
    path = tmp_path / "model"
    ag.tl.train(first, "cell_type", config={**FAST, "save": {"path": str(path)}}, rng=0)
    ag.tl.explain(first, n_samples=10, n_background=10, max_cells=20)
    before = (path / "weights.msgpack").read_bytes()
    with pytest.raises(FileExistsError, match="exists and is not empty; pass overwrite=True .*save.overwrite"):
        ag.tl.train(second, "cell_type", config={**FAST, "save": {"path": str(path)}}, rng=0)
    assert (path / "weights.msgpack").read_bytes() == before
    # asked: replaced, and the first AnnData's explanation now refuses the other model
    ag.tl.train(second, "cell_type", config={**FAST, "save": {"path": str(path), "overwrite": True}}, rng=0)
    assert second.uns["ag"]["model_id"] != first.uns["ag"]["model_id"]
    with pytest.raises(ValueError, match="is not the one adata.uns\\['ag'\\] was written with"):
        ag.tl.explain(first)
    # overwrite never empties a folder that holds other files
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds other files than a model \(notes.txt\)"):
        ag.tl.train(first, "cell_type", config={**FAST, "save": {"path": str(folder), "overwrite": True}}, rng=0)
    assert (folder / "notes.txt").read_text() == "mine" and sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
