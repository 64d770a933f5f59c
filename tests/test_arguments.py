"""Bad arguments fail at once, naming the argument, and leave nothing behind."""

import os

import pytest
from _search_helpers import TINY, cli

import autogenome_sc as ag


@pytest.fixture
def h5ad(tmp_path, _pbmc):
    path = tmp_path / "pbmc.h5ad"
    _pbmc.write_h5ad(path)
    return path


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rng": -1}, ValueError, r"rng must be an integer in \[0, 2\*\*63\), got -1"),
        ({"rng": "a"}, TypeError, "rng must be an integer seed, not str 'a'"),
        ({"rng": 2**70}, ValueError, "rng must be an integer in"),
        ({"rng": 1.5}, TypeError, "rng must be an integer seed, not float"),
        ({"rng": True}, TypeError, "rng must be an integer seed, not bool"),
        ({"timeout": "10"}, TypeError, "timeout must be a number of seconds, not str '10'"),
        ({"timeout": -5}, ValueError, "timeout must be a positive, finite number of seconds"),
        ({"timeout": float("inf")}, ValueError, "timeout must be a positive, finite"),
        ({"n_trials": 0}, ValueError, "n_trials must be a positive integer, got 0"),
        ({"n_trials": "3"}, TypeError, "n_trials must be a positive integer, not str"),
        ({"study_name": "../escape"}, ValueError, "study_name must be a plain file name"),
        ({"study_name": "a/b"}, ValueError, "study_name must be a plain file name"),
        ({"study_name": ".."}, ValueError, "study_name must be a plain file name"),
        ({"study_name": ""}, ValueError, "study_name must be a plain file name"),
    ],
)
def test_search_refuses_bad_arguments_and_writes_nothing(pbmc, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        ag.tl.search(pbmc, "bulk_labels", run_dir=tmp_path / "runs", config=TINY, **{"n_trials": 1, **kwargs})
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("escape*"))
    assert "ag" not in pbmc.uns


@pytest.mark.parametrize("call", ["train", "train_vae"])
def test_training_refuses_a_bad_rng(pbmc, call):
    fn = getattr(ag.tl, call)
    args = (pbmc, "bulk_labels") if call == "train" else (pbmc,)
    with pytest.raises(TypeError, match="rng must be an integer seed"):
        fn(*args, rng="0")
    with pytest.raises(ValueError, match=r"rng must be an integer in \[0, 2\*\*63\)"):
        fn(*args, rng=-3)


def test_explaining_an_embedding_model_is_refused(pbmc):
    ag.tl.train_vae(pbmc, config={"trainer": {"max_epochs": 1}}, rng=0)
    with pytest.raises(ValueError, match="is an embedding model .*resvae.*no predictions to explain"):
        ag.tl.explain(pbmc)
    with pytest.raises(TypeError, match="rng must be an integer seed"):
        ag.tl.explain(pbmc, rng=None)
    with pytest.raises(ValueError, match="predict_proba is for classification models; this is an embedding model"):
        ag.read_model(pbmc.uns["ag"]["model_path"]).predict_proba(pbmc)


def test_config_file_errors_are_sentences(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError, match="is not text \\(not UTF-8\\); a config is a JSON file"):
        ag.config.load(junk)
    with pytest.raises(IsADirectoryError, match="is a folder; pass the JSON file inside it"):
        ag.config.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ag.config.load(tmp_path / "none.json")


def test_cli_says_what_went_wrong(h5ad, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_bytes(os.urandom(256) + b"\xff")
    runs = tmp_path / "runs"
    cases = {
        "escape": (["--study", "../escape"], "study_name must be a plain file name"),
        "junk config": (["--study", "s", "--config", junk], "is not text (not UTF-8)"),
        "folder config": (["--study", "s", "--config", tmp_path], "is a folder"),
        "unknown storage": (["--study", "s", "--storage", "bogus://x"], "is not a storage the search can open"),
    }
    for what, (extra, expect) in cases.items():
        r = cli(
            "search", h5ad, "--label-key", "bulk_labels", "--n-trials", "1", "--run-dir", runs,
            "--out", tmp_path / "o.h5ad", *extra, cwd=tmp_path,
        )  # fmt: skip
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 1 and len(lines) == 1, (what, r.stderr[-1500:])
        assert lines[0].startswith("autogenome-sc: error:") and expect in lines[0], (what, lines[0])
    assert not (tmp_path / "escape.journal.log").exists() and not list(runs.glob("*.journal.log"))


def test_cli_names_the_kind_of_a_bare_failure():
    from autogenome_sc.cli import _sentence

    assert _sentence(KeyError("architecture")) == "KeyError 'architecture'"
    assert _sentence(ValueError("Config file 'x' is not valid JSON.")) == "Config file 'x' is not valid JSON."
    assert _sentence(TypeError()) == "TypeError"


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"resnet_widths": [0]}, r"search.spaces.resnet_widths': every choice must be a positive integer; 0 is not"),
        ({"batch_size": [64, -1]}, r"search.spaces.batch_size': every choice must be a positive integer; -1 is not"),
        ({"densenet_blocks": [[]]}, r"densenet_blocks': every block structure needs at least one block"),
        ({"input_keep": [0.0]}, r"input_keep': every choice must be in \(0, 1\]; 0.0 is not"),
        ({"dropout": [1.0]}, r"dropout': every choice must be in \[0, 1\); 1.0 is not"),
        ({"n_genes": [None, 0]}, r"n_genes': every choice must be None \(all genes\) or a positive number"),
        ({"resvae_first_widths": [4]}, r"resvae_first_widths': every first width must be at least 8"),
    ],
)
def test_search_spaces_are_validated_before_any_trial(pbmc, tmp_path, space, match):
    with pytest.raises(ValueError, match=match):
        ag.tl.search(pbmc, "bulk_labels", n_trials=1, run_dir=tmp_path, config={"search": {"spaces": space}})
    assert not list(tmp_path.iterdir())
