"""Model files from elsewhere: checked against the weights before anything is built; never overwritten unasked."""

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pandas as pd
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
        (_set(["architecture"], "width", "abc"), r"architecture.width = 'abc' in model.json must be a whole number"),
        (_set(["architecture"], "width", -5), r"architecture.width = -5 in model.json must be a whole number of at "),
        (_set(["architecture"], "n_blocks", 20000), r"architecture.n_blocks = 20000 in model.json does not fit"),
        (_set(["architecture"], "model", "transformer"), r"unknown model 'transformer'"),
        (
            _set(["architecture"], "activation", "os.system"),
            r"activation = 'os.system' in model.json must be one of relu",
        ),
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
    _edit(path, lambda m: (m.pop("checksum"), m.pop("matrix"), m.update(format_version=1)))  # as format 1 wrote it
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


# ---------------------------------------------------------------------------- every field that decides a prediction
def _resum(path):
    """Recompute the checksum, as a forger who knows the format would."""
    from autogenome_sc.io._validate import checksum

    meta = json.loads((path / "model.json").read_text())
    meta["checksum"] = checksum(meta, (path / "weights.msgpack").read_bytes())
    (path / "model.json").write_text(json.dumps(meta))


def _refused_before_building(path, match, monkeypatch):
    built = []
    post_init = ag.Model.__post_init__
    monkeypatch.setattr(ag.Model, "__post_init__", lambda self: built.append(1) or post_init(self))
    with pytest.raises(ValueError, match=match) as info:
        ag.read_model(path)
    assert not built
    assert "\n" not in str(info.value) and str(path) in str(info.value)  # one sentence naming the model
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (_set(["calibration"], "temperature", 0), r"'calibration.temperature' is 0; it must be a positive finite"),
        (_set(["calibration"], "temperature", -1.0), r"'calibration.temperature' is -1.0; it must be a positive"),
        (_set(["calibration"], "temperature", float("nan")), r"'calibration.temperature' is nan"),
        (_set(["calibration"], "temperature", float("inf")), r"'calibration.temperature' is inf"),
        (_set(["calibration"], "temperature", "1.0"), r"'calibration.temperature' is '1.0'"),
        (_set(["calibration"], "temperature", True), r"'calibration.temperature' is True"),
        (_set([], "calibration", [1.0]), r"'calibration' must be an object"),
        (
            _set(["architecture"], "width", 0),
            r"architecture.width = 0 in model.json must be a whole number of at least 1",
        ),
        (_set(["architecture"], "width", 16.5), r"architecture.width = 16.5 in model.json must be a whole number"),
        (_set(["architecture"], "width", True), r"architecture.width = True in model.json must be a whole number"),
        (
            _set(["architecture"], "dropout", 1.0),
            r"architecture.dropout = 1.0 in model.json must be a number in \[0, 1\)",
        ),
        (_set(["architecture"], "input_keep", 0), r"architecture.input_keep = 0 in model.json must be a number in \(0"),
        (_set(["architecture"], "batch_norm", "yes"), r"architecture.batch_norm = 'yes' in model.json must be true or"),
        (_set(["architecture"], "widths", [8]), r"architecture.widths in model.json is not a setting of a resnet"),
        (_set(["architecture"], "model", "resvae"), r"a model for classification needs a supervised network"),
        (
            _set([], "architecture", {"model": "ensemble", "weights": [-1, 2], "members": [{"model": "linear"}] * 2}),
            r"architecture.weights in model.json must be numbers of at least 0, not all 0",
        ),
        (
            _set([], "architecture", {"model": "ensemble", "members": [{"model": "vae"}]}),
            r"architecture.members\[0\] in model.json is a vae, which cannot be an ensemble member",
        ),
        (
            _set([], "architecture", {"model": "rrfcn", "widths": [8, 8, 8], "edges": [[0, 1], [2, 2]]}),
            r"architecture.edges in model.json must join each of its 3 nodes but the first to earlier ones",
        ),
        (_set(["preprocessing"], "input", "banana"), r"'preprocessing' must be an object whose 'input' is one of"),
        (_set(["preprocessing"], "applied", "exp"), r"'preprocessing.applied' is 'exp'; expected one of none"),
        (_set(["preprocessing"], "scaling", "robust"), r"'preprocessing.scaling' is 'robust'"),
        (_set(["preprocessing"], "clip", [1.0, 0.0]), r"'preprocessing.clip' has its low bound above its high"),
        (_set([], "target_std", 0.0), r"'target_std' must be a positive finite number"),
        (_set(["config", "data"], "min_gene_overlap", "0.5"), r"'config.data.min_gene_overlap' is '0.5'; it must be"),
        (_set(["config", "data"], "min_gene_overlap", 2), r"'config.data.min_gene_overlap' is 2; it must be a number"),
        (_set(["config", "data"], "chunk_mb", 0), r"'config.data.chunk_mb' is 0; it must be a positive"),
        (_set([], "format_version", "3"), r"'format_version' must be a whole number"),
        (_set([], "format_version", True), r"'format_version' must be a whole number"),
        (_set([], "format_version", 99), r"saved by a newer autogenome_sc \(format 99\)"),
    ],
)
def test_every_prediction_field_is_checked_by_type_and_range(trained, tmp_path, change, match, monkeypatch):
    """Even with the checksum recomputed (a forger's edit): refused in one sentence before anything is built."""
    _, model = trained
    path = _copy(model, tmp_path)
    _edit(path, change)
    _resum(path)
    _refused_before_building(path, match, monkeypatch)


@pytest.mark.parametrize(
    "change",
    [
        _set(["calibration"], "temperature", 0.5),  # a legal value: only the checksum tells
        _set([], "matrix", {"layer": "counts", "use_raw": False}),
        _set(["config", "data"], "min_gene_overlap", 0.0),
        _set(["metrics"], "accuracy", 0.123),
    ],
)
def test_the_checksum_covers_every_field_since_format_3(trained, tmp_path, change, monkeypatch):
    _, model = trained
    path = _copy(model, tmp_path)
    _edit(path, change)
    _refused_before_building(path, r"was changed after it was saved: its checksum does not match", monkeypatch)


def test_a_checksummed_format_without_its_checksum_is_refused(trained, tmp_path, monkeypatch):
    from conftest import as_format_2

    _, model = trained
    for version in (2, 3):
        path = _copy(model, tmp_path, f"v{version}")
        if version == 2:
            as_format_2(path)
        _edit(path, lambda m: m.pop("checksum"))
        _refused_before_building(
            path, rf"has no checksum in its model.json although format {version} always", monkeypatch
        )
    # pretending to be format 1 (no checksum) with a field format 1 never wrote
    path = _copy(model, tmp_path, "v1")
    _edit(path, lambda m: (m.pop("checksum"), m.update(format_version=1)))
    _refused_before_building(path, r"claims format 1 \(saved without a checksum\) but holds 'matrix'", monkeypatch)


def test_a_model_saved_by_the_previous_version_loads_and_is_checked_its_way(trained, tmp_path, monkeypatch):
    """Format 2: its checksum covers the fields that decided predictions then; the rest is still range-checked."""
    from conftest import as_format_2

    adata, model = trained
    path = _copy(model, tmp_path)
    old_id = as_format_2(path)
    old = ag.read_model(path)
    assert old.id_ == old_id != model.id_
    pd.testing.assert_frame_equal(old.predict(adata), model.predict(adata))
    again = ag.read_model(old.save(tmp_path / "again"))  # saved again: format 3, a new id
    assert (
        json.loads((again.path / "model.json").read_text())["format_version"] == 3 and again.id_ == old.id_ is not None
    )
    # what format 2 covered is refused when changed ...
    _edit(path, lambda m: m["classes"].reverse())
    _refused_before_building(path, r"its checksum does not match", monkeypatch)
    # ... what it did not cover is still checked by range
    path = _copy(model, tmp_path, "t")
    as_format_2(path)
    _edit(path, _set(["calibration"], "temperature", -1.0))
    _refused_before_building(path, r"'calibration.temperature' is -1.0", monkeypatch)


def _rewrite_weights(path, change):
    from flax import serialization

    state = serialization.msgpack_restore((path / "weights.msgpack").read_bytes())
    change(state)
    (path / "weights.msgpack").write_bytes(serialization.msgpack_serialize(state))
    _resum(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s["novelty"].__setitem__("reference", np.r_[np.nan, s["novelty"]["reference"]]), r"non-finite"),
        (
            lambda s: s["novelty"].__setitem__("tail", np.float64(-1.0)),
            r"novelty statistics .* \('tail' must be positive",
        ),
        (
            lambda s: s["novelty"].__setitem__("reference", s["novelty"]["reference"][::-1].copy()),
            r"a sorted reference",
        ),
        (
            lambda s: s["novelty"].__setitem__("held_out_points", s["novelty"]["held_out_points"][1:]),
            r"a held-out cell's coordinates for each held-out score",
        ),
        (
            lambda s: s["novelty"].__setitem__("query_weight", np.float64(-0.5)),
            r"\('query_weight' must be positive",
        ),
        (
            lambda s: s["novelty"].__setitem__("held_out_raw", np.zeros(1001)),
            r"1 to 1000 held-out cells' scores",
        ),
        (lambda s: s["novelty"].pop("held_out_raw"), r"novelty statistics in weights.msgpack are damaged \(expected"),
        (lambda s: s["novelty"].pop("projection"), r"novelty statistics in weights.msgpack are damaged \(expected"),
        (
            lambda s: s["novelty"].__setitem__("projection", s["novelty"]["projection"][:-1]),
            r"a projection of the model's \d+ genes",
        ),
        (
            lambda s: s["novelty"].__setitem__("point_class", s["novelty"]["point_class"] + 99),
            r"a reference cell's class is not one of the model's",
        ),
        (
            lambda s: s["novelty"].__setitem__("points", s["novelty"]["points"][:, :-1]),
            r"reference cells, each with its class",
        ),
        (
            lambda s: s["novelty"].__setitem__("lr_coef", s["novelty"]["lr_coef"][:, :-1]),
            r"the reference-space classifier",
        ),
        (
            lambda s: s["novelty"].__setitem__("maha_means", s["novelty"]["maha_means"][:-1]),
            r"the Mahalanobis distance: a whitening of the components, a mean per class",
        ),
        (
            lambda s: s["novelty"].__setitem__("maha_whiten", s["novelty"]["maha_whiten"][:, :-1]),
            r"the Mahalanobis distance: a whitening of the components, a mean per class",
        ),
        (
            lambda s: s["novelty"].__setitem__("dist_weights", np.r_[s["novelty"]["dist_weights"], 1.0]),
            r"two distances: a location, a scale and a weight for each",
        ),
        (
            lambda s: s["novelty"].__setitem__("dist_scale", -s["novelty"]["dist_scale"]),
            r"\('dist_scale' must be positive",
        ),
        (lambda s: s["novelty"].pop("maha_whiten"), r"novelty statistics in weights.msgpack are damaged \(expected"),
    ],
)
def test_damaged_novelty_statistics_are_refused(trained, tmp_path, change, match, monkeypatch):
    """They decide ag_uncertainty, and so which cells a rejection leaves Unassigned."""
    _, model = trained
    path = _copy(model, tmp_path)
    _rewrite_weights(path, change)
    _refused_before_building(path, match, monkeypatch)


def test_novelty_statistics_of_another_embedding_are_refused(trained, tmp_path):
    _, model = trained
    path = _copy(model, tmp_path)

    def wider(s):  # the statistics of a model saved before the input-space distance: class centroids of the embedding
        score = {k: s["novelty"][k] for k in ("conf_loc", "conf_scale", "reference", "tail")}
        score.update(dist_loc=np.float64(0.0), dist_scale=np.float64(1.0))  # one distance then
        n, width = len(model.classes_), 64  # the network embeds in 32
        s["novelty"] = {**score, "centroids": np.zeros((n, width)), "inv_var": np.ones(width), "present": np.ones(n)}

    _rewrite_weights(path, wider)
    with pytest.raises(ValueError, match=r"novelty statistics in weights.msgpack are for an embedding of 64 dim"):
        ag.read_model(path)


def test_a_model_saved_before_the_mahalanobis_distance_reads_the_neighbour_distance_alone(trained, tmp_path):
    """Its statistics hold one distance: it loads, and its uncertainty is the score it was saved with."""
    from autogenome_sc.train._confidence import input_novelty_raw, rank_of

    adata, model = trained
    path = _copy(model, tmp_path)

    def before(s):
        nov = s["novelty"]
        for k in ("maha_whiten", "maha_means", "dist_weights"):
            nov.pop(k)
        nov["dist_loc"], nov["dist_scale"] = np.float64(nov["dist_loc"][0]), np.float64(nov["dist_scale"][0])

    _rewrite_weights(path, before)
    old = ag.read_model(path)
    pipe = old.pipeline(adata)[0]
    dist, lr = old.input_evidence(pipe, adata.n_obs)
    assert dist.ndim == 1
    np.testing.assert_allclose(dist, model.input_evidence(model.pipeline(adata)[0], adata.n_obs)[0][:, 0])
    got = ag.tl.predict(adata, old, copy=True).obs["ag_uncertainty"].to_numpy()
    conf = adata.obs["ag_confidence"].to_numpy()  # the same network: the same calibrated confidence
    want = rank_of(input_novelty_raw(dist, conf, lr.max(axis=1), old.novelty_), old.novelty_)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _no_reading(monkeypatch, name):
    """Fail the test if the package opens the file ``name`` of a model folder."""
    from autogenome_sc.io import _files

    def guarded(file, *args, **kwargs):
        assert Path(file).name != name, f"{name} was read"
        return open(file, *args, **kwargs)

    monkeypatch.setattr(_files, "open", guarded, raising=False)


def test_files_beyond_their_bounds_are_refused_before_being_read(trained, tmp_path, monkeypatch):
    _, model = trained
    path = _copy(model, tmp_path)
    size = (path / "weights.msgpack").stat().st_size
    os.truncate(path / "weights.msgpack", 2 * 2**30)  # 2 GB (sparse: takes no disk)
    _no_reading(monkeypatch, "weights.msgpack")
    with pytest.raises(
        ValueError, match=r"weights.msgpack' is 2048.0 MB, more than the architecture in model.json can"
    ):
        ag.read_model(path)
    os.truncate(path / "weights.msgpack", size)
    os.truncate(path / "model.json", 17 * 2**20)
    _no_reading(monkeypatch, "model.json")
    with pytest.raises(ValueError, match=r"model.json' is 17.0 MB; a model.json is at most 16.0 MB"):
        ag.read_model(path)


def test_the_weights_bound_leaves_real_models_room(trained, tmp_path):
    """Twice what a float32 model takes, at least: a real model is never near it."""
    from autogenome_sc.io._validate import weights_bound

    _, model = trained
    meta = json.loads((model.path / "model.json").read_text())
    assert weights_bound(meta) - 2 * 2**20 > 2 * (model.path / "weights.msgpack").stat().st_size


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deeply_nested_json_is_refused(trained, tmp_path, depth):
    _, model = trained
    path = _copy(model, tmp_path)
    text = (path / "model.json").read_text().rstrip()
    assert text.endswith("}")
    (path / "model.json").write_text(text[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ValueError, match=r"model.json' nests objects or lists more than 32 deep"):
        ag.read_model(path)


def test_model_json_that_is_not_text_is_refused(trained, tmp_path):
    _, model = trained
    path = _copy(model, tmp_path)
    (path / "model.json").write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"model.json' is not text \(not UTF-8\)"):
        ag.read_model(path)


def test_the_schema_follows_the_networks():
    """Every key a network's architecture may hold is a field of its Flax module, with the module's default size."""
    import dataclasses

    from autogenome_sc.io._schema import NETWORKS, SIZE_DEFAULTS, VAE
    from autogenome_sc.nn import MODELS, ResVAE

    for name, keys in NETWORKS.items():
        fields = {f.name: f.default for f in dataclasses.fields(MODELS[name]) if f.name not in ("parent", "name")}
        assert set(keys) == set(fields) - {"n_out"}, name
        for key, default in SIZE_DEFAULTS.get(name, {}).items():
            assert list(np.atleast_1d(fields[key])) == list(np.atleast_1d(default)) or fields[key] == tuple(default)
    vae = {f.name for f in dataclasses.fields(ResVAE)} - {"parent", "name", "n_genes", "skip"}
    assert vae == set(VAE) - {"kl_warmup"}
