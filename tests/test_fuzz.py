"""Property-based fuzz (hypothesis): model files, configs, small AnnData and command lines from elsewhere.

The property, for every input: either a one-sentence error of ours naming it (raised in the package,
not from inside JAX, NumPy, pandas or anndata) or a correct result; nothing written outside the
target; predictions never changed without the file saying so. The examples are derandomized (the
same on every run, so CI is reproducible) and few, to keep the file within a few minutes on 2 cores.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import synthetic_counts
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import autogenome_sc as ag
from autogenome_sc.cli import main
from autogenome_sc.io._validate import checksum

FUZZ = settings(
    derandomize=True,  # the same examples on every run
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: An example that takes longer than this is a hang, as far as these inputs go.
BOUND_S = 120
OURS = (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError)


def assert_one_sentence(e: BaseException, *what: str) -> None:
    """``e`` is an error of ours, raised by the package, one line naming one of ``what``."""
    assert isinstance(e, OURS), f"{type(e).__name__}: {e}"
    frames = traceback.extract_tb(e.__traceback__)
    assert "autogenome_sc" in frames[-1].filename, f"raised in {frames[-1].filename}: {e}"
    msg = str(e.args[0]) if e.args else ""
    assert msg and "\n" not in msg.strip() and len(msg) < 700, msg
    assert any(w in msg for w in what), f"none of {what} is named in: {msg}"


# ---------------------------------------------------------------------------- model.json
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, -1, 1, 2, 16.5, 0.0, 1e38, -1e-9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


def _paths(obj, prefix=()):
    """Every key path of ``obj`` (lists longer than 8 sampled at their ends: var_names, scalers)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        idx = range(len(obj)) if len(obj) <= 8 else [0, len(obj) - 1]
        for i in idx:
            yield from _paths(obj[i], (*prefix, i))


def _edit(meta: dict, path: tuple, how: str, value):
    parent = meta
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if how == "delete":
        del parent[key]
    elif how == "nest":
        parent[key] = [[parent[key]]]
    else:
        parent[key] = value


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A trained model, its files and its predictions on 40 cells."""
    adata = synthetic_counts(n_cells=300, n_genes=40, n_types=3)
    path = tmp_path_factory.mktemp("fuzz") / "model"
    cfg = {"trainer": {"max_epochs": 2, "patience": 2}, "models": {"mlp": {"widths": [16, 8]}}}
    ag.tl.train(adata, "cell_type", model="mlp", config={**cfg, "save": {"path": str(path)}}, rng=0)
    query = adata[:40].copy()
    meta = json.loads((path / "model.json").read_text())
    expected = ag.read_model(path).predict(query)
    return path, meta, (path / "weights.msgpack").read_bytes(), query, expected


@settings(FUZZ, max_examples=60)
@given(data=st.data(), how=st.sampled_from(["delete", "set", "nest"]), value=_VALUES, resign=st.booleans())
def test_an_edited_model_json_is_refused_in_one_sentence_or_predicts_as_it_says(
    reference, tmp_path, data, how, value, resign
):
    path, meta, weights, query, expected = reference
    paths = [p for p in _paths(meta) if p and p != ("checksum",)]
    where = data.draw(st.sampled_from(paths), label="path")
    edited = copy.deepcopy(meta)
    _edit(edited, where, how, value)
    if resign:  # a forger who recomputes the checksum
        edited["checksum"] = checksum(edited, weights)
    target = tmp_path / f"m{time.monotonic_ns()}"
    shutil.copytree(path, target)
    (target / "model.json").write_text(json.dumps(edited))
    start = time.perf_counter()
    try:
        model = ag.read_model(target)
        got = model.predict(query)
    except Exception as e:  # noqa: BLE001 - the property is about what was raised
        event(f"refused: {type(e).__name__}")
        assert_one_sentence(e, "model.json", str(target))
    else:
        event("loaded")
        if not resign and edited != meta:  # changed without a new checksum: loading must not have happened
            pytest.fail(f"an edit of {where} ({how}) was loaded without a matching checksum")
        assert len(got) == len(query)
        if "confidence" in got:
            assert np.isfinite(got["confidence"].to_numpy(dtype=float)).all()
    assert time.perf_counter() - start < BOUND_S
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "weights.msgpack"]  # nothing written


def test_the_unedited_copy_predicts_what_the_model_did(reference, tmp_path):
    path, meta, weights, query, expected = reference
    shutil.copytree(path, tmp_path / "m")
    got = ag.read_model(tmp_path / "m").predict(query)
    pd.testing.assert_frame_equal(got, expected)


# ---------------------------------------------------------------------------- configs
_DEFAULT = ag.config.validate(None).model_dump(mode="json")


@settings(FUZZ, max_examples=150)
@given(data=st.data(), how=st.sampled_from(["delete", "set", "nest", "unknown"]), value=_VALUES)
def test_a_random_config_is_refused_in_one_sentence_or_validated_strictly(data, how, value):
    paths = [p for p in _paths(_DEFAULT) if p]
    where = data.draw(st.sampled_from(paths), label="path")
    cfg = copy.deepcopy(_DEFAULT)
    if how == "unknown":
        where = (*where[:-1], "not_a_field")
        how = "set"
        parent = cfg
        for k in where[:-1]:
            if not isinstance(parent, dict):
                return
            parent = parent[k]
        if not isinstance(parent, dict):
            return
    _edit(cfg, where, how, value)
    try:
        got = ag.config.validate(cfg).model_dump(mode="json")
    except Exception as e:  # noqa: BLE001
        event("refused")
        assert_one_sentence(e, "config")
        return
    event("accepted")
    # accepted: strictly as given, never a string or a boolean turned into a number
    old = _DEFAULT
    for k in where[:-1]:
        old = old[k]
    before = old[where[-1]] if isinstance(old, dict) and where[-1] in old else None
    if isinstance(before, int | float) and not isinstance(before, bool) and how == "set":
        assert not isinstance(value, str | bool), f"{where} accepted {value!r}"
    assert ag.config.validate(got).model_dump(mode="json") == got


# ---------------------------------------------------------------------------- small AnnData
_LABELS = st.sampled_from(["str", "int", "float", "float_inf", "float_1e38", "mixed", "cat_mixed", "bool", "nan"])
_FAST = {
    "trainer": {"max_epochs": 1, "patience": 1, "min_steps_per_epoch": 1, "batch_size": 16},
    "models": {"mlp": {"widths": [4]}},
}


def _labels(kind: str, n: int, rng: np.random.Generator):
    k = rng.integers(0, 3, n)
    return {
        "str": np.array(["a", "b", "c"])[k],
        "int": k,
        "float": k.astype(float) + 0.5 * rng.random(n),
        "float_inf": np.where(k == 0, np.inf, k.astype(float)),
        "float_1e38": np.where(k == 0, 1e38, k.astype(float)),
        "mixed": np.array([1, "1", "b"], dtype=object)[k],
        "cat_mixed": pd.Categorical(np.array([1, "1", "b"], dtype=object)[k]),
        "bool": k == 0,
        "nan": np.where(k == 0, np.nan, k.astype(float)),
    }[kind]


@settings(FUZZ, max_examples=12)
@given(
    labels=_LABELS,
    layout=st.sampled_from(["dense", "csr", "csc"]),
    view=st.booleans(),
    backed=st.booleans(),
    copy=st.booleans(),
    seed=st.integers(0, 3),
)
def test_random_small_anndata_trains_or_is_refused_before_any_work(
    tmp_path, monkeypatch, labels, layout, view, backed, copy, seed
):
    tmp_path = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example (the fixture's is shared)
    models = tmp_path / "models"
    monkeypatch.setattr(ag.settings, "model_dir", models)
    rng = np.random.default_rng(seed)
    n = 60
    X = rng.poisson(2.0, (n, 12)).astype(np.float32)
    adata = anndata.AnnData({"dense": X, "csr": sp.csr_matrix(X), "csc": sp.csc_matrix(X)}[layout])
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = [f"g{j}" for j in range(12)]
    adata.obs["y"] = _labels(labels, n, rng)
    if backed and labels not in ("mixed", "cat_mixed"):  # (h5ad cannot store a column of mixed types)
        adata.write_h5ad(tmp_path / "in.h5ad")
        adata = anndata.read_h5ad(tmp_path / "in.h5ad", backed="r")
    if view:
        adata = adata[5:50]
    before = sorted(p.name for p in tmp_path.iterdir())
    start = time.perf_counter()
    try:
        out = ag.tl.train(adata, "y", model="mlp", config=_FAST, copy=copy)
    except Exception as e:  # noqa: BLE001
        assert_one_sentence(e, "adata")
        assert not models.exists()  # refused before anything was saved
        return
    finally:
        assert time.perf_counter() - start < BOUND_S
        # nothing written beside the input but the model folder
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "models") == before
    result = out if copy else adata
    assert "ag_prediction" in result.obs and result.obs["ag_prediction"].notna().all()
    if not result.isbacked:
        result.write_h5ad(tmp_path / "out.h5ad")
        back = anndata.read_h5ad(tmp_path / "out.h5ad")
        assert (back.obs["ag_prediction"].astype(str) == result.obs["ag_prediction"].astype(str)).all()


# ---------------------------------------------------------------------------- command lines
@pytest.fixture(scope="module")
def cli_files(reference, tmp_path_factory):
    path, _, _, query, _ = reference
    folder = tmp_path_factory.mktemp("cli")
    query.write_h5ad(folder / "q.h5ad")
    (folder / "a_folder").mkdir()
    (folder / "not_h5ad.h5ad").write_text("hello")
    return folder, path


_FLAGS = {  # each command's options, with values to draw from
    "predict": ["--key-added", "--layer", "--batch-key", "--backed", "--use-raw"],
    "search": ["--key-added", "--n-trials", "--timeout", "--storage", "--modes", "--config", "--rng", "--study",
               "--run-dir", "--backed", "--layer"],
}  # fmt: skip
_VALUES_CLI = ["a/b", "", "ag2", "-1", "0", "1e9", "nan", "bogus://x", "mlp", "nope", "FOLDER", "MISSING", "BAD"]


@settings(FUZZ, max_examples=60)
@given(
    command=st.sampled_from(["predict", "search"]),
    data=st.sampled_from(["DATA", "DATA", "MISSING", "BAD", "FOLDER"]),
    model=st.sampled_from(["MODEL", "MODEL", "MISSING", "FOLDER", "DATA"]),
    out=st.sampled_from(["OUT", "OUT", "FOLDER", "MISSING_DIR", ""]),
    extra=st.lists(st.tuples(st.integers(0, 20), st.sampled_from(_VALUES_CLI)), max_size=4),
)
def test_random_command_lines_exit_with_a_sentence(cli_files, capsys, command, data, model, out, extra):
    """Label columns the data lack (a search never starts a trial here); predictions are made and written."""
    folder, model_path = cli_files
    real = {
        "DATA": str(folder / "q.h5ad"),
        "MODEL": str(model_path),
        "OUT": str(folder / "out.h5ad"),
        "FOLDER": str(folder / "a_folder"),
        "BAD": str(folder / "not_h5ad.h5ad"),
        "MISSING": str(folder / "missing.h5ad"),
        "MISSING_DIR": str(folder / "no_folder" / "out.h5ad"),
    }
    argv = [command, real[data], "--out", real.get(out, out)]
    argv += ["--model", real[model]] if command == "predict" else ["--label-key", "no_such_column"]
    for i, value in extra:
        flag = _FLAGS[command][i % len(_FLAGS[command])]
        argv += [flag] if flag in ("--backed", "--use-raw") else [flag, real.get(value, value)]
    before = sorted(p.name for p in folder.iterdir())
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    err = capsys.readouterr().err
    event(f"{command} exit {code}")
    assert code in (0, 1, 2), argv
    if code == 1:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("autogenome-sc: error: "), err
    if code == 0:
        assert command == "predict"
        back = anndata.read_h5ad(folder / "out.h5ad")
        key = argv[len(argv) - 1 - argv[::-1].index("--key-added") + 1] if "--key-added" in argv else "ag"
        assert f"{key}_prediction" in back.obs
        (folder / "out.h5ad").unlink()
    assert sorted(p.name for p in folder.iterdir()) == before, argv  # no write beside the output
