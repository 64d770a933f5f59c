"""Shared fixtures: real data (pbmc68k_reduced ships inside scanpy) and a model dir per test.

Also the test tiers (docs/code_map.md, "Test tiers") and JAX's persistent compilation cache
for the test session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings

import jax
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

import autogenome_sc as ag

# The tiers (docs/code_map.md): `-m "not slow"` is the fast tier. The tests of a tier that needs
# more than the package (notebooks, the Sphinx build, a PostgreSQL server) are slow too. SLOW
# holds the others that took 5 s or more on 2 cores (`pytest --durations=0`, all of a test's
# parametrisations and its setup together); the users of a module-scoped fixture that one of
# them sets up go with it (ENAS's `searched`, `explained`, `pbmc_vae`), or its setup would only
# move to the next test. Keyed by "file::function", so test bodies stay untouched.
IMPLY_SLOW = ("notebook", "docs", "postgres")
SLOW = {
    "test_arguments.py::test_cli_says_what_went_wrong",
    "test_arguments.py::test_explaining_an_embedding_model_is_refused",
    "test_batches.py::test_search_with_batch_key_saves_it_and_explains",
    "test_cli.py::test_bad_path_and_bad_label_key_one_sentence",
    "test_cli.py::test_help_of_every_command",
    "test_cli.py::test_search_then_predict",
    "test_device_prepare.py::test_two_devices",
    "test_enas.py::test_architecture_h5ad_round_trip_and_plot",
    "test_enas.py::test_controller_beats_random_children_on_same_weights",
    "test_enas.py::test_controller_steps_in_groups_equal_one_loop_and_padding_changes_nothing",
    "test_enas.py::test_enas_in_a_search_keeps_to_its_share_of_the_timeout",
    "test_enas.py::test_enas_search_on_pbmc",
    "test_enas.py::test_reinforce_learns_a_synthetic_reward",
    "test_enas.py::test_same_rng_same_architecture_and_model",
    "test_enas.py::test_saved_rrfcn_loads_and_predicts",
    "test_enas.py::test_supernet_one_compilation_for_50_architectures",
    "test_explain.py::test_completeness_within_monte_carlo_error",
    "test_explain.py::test_explain_rejects_bad_input",
    "test_explain.py::test_explanation_and_importance_on_pbmc",
    "test_explain.py::test_h5ad_round_trip_keeps_class_names_with_slashes",
    "test_explain.py::test_plots_return_axes_and_name_genes",
    "test_explain.py::test_shap_dotplot_draws_each_classs_top_genes_with_scanpy",
    "test_explain.py::test_top_genes_include_canonical_markers",
    "test_fuzz.py::test_an_edited_model_json_is_refused_in_one_sentence_or_predicts_as_it_says",
    "test_fuzz.py::test_random_command_lines_exit_with_a_sentence",
    "test_fuzz.py::test_random_small_anndata_trains_or_is_refused_before_any_work",
    "test_fuzz.py::test_the_unedited_copy_predicts_what_the_model_did",
    "test_gene_ids.py::test_gene_symbols_are_recorded_and_a_query_is_matched_by_them",
    "test_presets.py::test_a_stagnant_search_stops_early_and_says_why",
    "test_presets.py::test_search_with_a_preset_runs_and_records_it",
    "test_gene_ids.py::test_predict_reads_the_matrix_the_model_was_trained_on",
    "test_hierarchy.py::test_search_takes_levels_too",
    "test_parallel.py::test_two_devices_match_one_device",
    "test_parallel.py::test_two_processes_train_one_model_together",
    "test_readme.py::test_quickstart_runs_on_bundled_data",
    "test_register_mode.py::test_a_registered_mode_is_searched_saved_and_loaded",
    "test_reliability.py::test_a_full_tmpfs_leaves_the_model_and_the_journal_whole",
    "test_reliability.py::test_a_killed_save_leaves_the_old_model_readable",
    "test_reliability.py::test_a_search_continues_from_a_torn_journal",
    "test_reliability.py::test_two_processes_saving_to_one_new_path_exactly_one_succeeds",
    "test_round_trips.py::test_results_survive_a_round_trip",
    "test_scale.py::test_backed_embedding_explanation_and_search",
    "test_scale.py::test_memory_stays_far_below_the_dense_matrix",
    "test_search.py::test_killed_embedded_run_resumes_and_retries",
    "test_search_modes.py::test_enas_is_a_search_mode",
    "test_search_modes.py::test_the_pruner_never_stops_a_linear_or_portfolio_trial",
    "test_search_modes.py::test_unsupervised_search_of_the_resvae_resumes_and_scores_latent",
    "test_search_modes.py::test_vae_search_starts_from_the_defaults_and_keeps_no_warm_up_epoch",
    "test_select.py::test_the_solved_families_are_floors_and_cross_validated_cheapest_first",
    "test_select.py::test_candidates_add_the_best_linear_model_on_all_genes_and_on_selected_genes",
    "test_select.py::test_cv_selection_is_deterministic_and_its_model_round_trips",
    "test_select.py::test_ensemble_averages_member_probabilities_each_with_its_own_scaling",
    "test_select.py::test_out_of_fold_outputs_come_from_models_that_never_saw_the_cell",
    "test_trees.py::test_a_forged_tree_is_refused_on_load",
    "test_trees.py::test_a_search_of_trees_refits_on_the_stages_cross_validation_chose",
    "test_trees.py::test_a_tree_model_is_explained_in_logits_exactly",
    "test_trees.py::test_the_arrays_evaluate_as_scikit_learns_trees",
    "test_settings.py::test_the_compilation_cache_is_the_users_own_and_changes_no_number",
    "test_train.py::test_bf16_mixed_precision_trains_float32_parameters_to_the_same_accuracy",
    "test_train.py::test_each_model_trains_and_compiles_once",
    "test_vae.py::test_dense_narrow_data_get_a_gaussian_likelihood_and_a_small_latent_that_stay_alive",
    "test_vae.py::test_nb_counts_same_rng_same_latent_and_reconstruction",
    "test_vae.py::test_pbmc_latent_separates_cell_types",
    "test_vae.py::test_plain_vae_through_tl_train",
    "test_vae.py::test_saved_embedding_model_embeds_a_query",
}
# The modules that take longest in all (notebooks, the README's quickstart, scale), for pytest-xdist.
LONGEST_FIRST = ("test_tutorials.py", "test_readme.py", "test_scale.py")


def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        key = f"{item.path.name}::{item.originalname}"
        if key in SLOW or any(item.get_closest_marker(m) for m in IMPLY_SLOW):
            item.add_marker("slow")
            found.add(key)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the longest modules first, so none is left to the end
        items.sort(key=lambda item: LONGEST_FIRST.index(item.path.name) if item.path.name in LONGEST_FIRST else 99)
    collected = {item.path.name for item in items}
    stale = sorted(k for k in SLOW if k.split("::")[0] in collected and k not in found)
    if stale:  # a renamed test would silently join the fast tier
        warnings.warn(f"tests/conftest.py SLOW names tests that do not exist: {stale}", stacklevel=1)


_CACHE_DIR: str | None = None  # the persistent compilation cache this process made (and removes)


def pytest_configure(config):
    """JAX's persistent compilation cache in a temporary folder, for this test session only.

    Tests train many networks of the same shapes; each run traces again, and a compilation
    that another test (or a subprocess: a notebook's kernel, a CLI worker) already made is
    read back instead of compiled. The environment variables reach the subprocesses and the
    workers of pytest-xdist, which share the folder (the package's own default, a folder in the
    user's cache, is left alone: its tests run in subprocesses of their own, tests/test_settings.py).
    """
    global _CACHE_DIR
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a folder of the caller's (or of the xdist controller)
        return
    _CACHE_DIR = tempfile.mkdtemp(prefix="ag-tests-jax-cache-")
    import autogenome_sc as ag

    ag.settings.compile_cache = _CACHE_DIR  # instead of the package's default folder, for this session
    cache = {
        "jax_compilation_cache_dir": _CACHE_DIR,
        "jax_persistent_cache_min_compile_time_secs": 0.0,  # the default (1 s) would skip most of ours
        "jax_persistent_cache_min_entry_size_bytes": -1,  # whatever their size
    }
    for name, value in cache.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)


def pytest_unconfigure(config):
    if _CACHE_DIR is not None:
        shutil.rmtree(_CACHE_DIR, ignore_errors=True)


# Small and fast training for tests that check plumbing rather than accuracy.
FAST = {"trainer": {"max_epochs": 8, "patience": 8}, "models": {"resnet": {"width": 32, "n_blocks": 1}}}


# The package's default output folders under the current directory. A test must write into its own
# temporary folder (run_dir=, the model_dir set below): one that writes here fails by name, instead of
# failing a notebook test that runs beside it and checks the repository for files left behind.
_DEFAULT_OUTPUTS = ("ag_runs", "ag_models")


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(ag.settings, "model_dir", tmp_path / "models")
    before = {name for name in _DEFAULT_OUTPUTS if os.path.exists(name)}
    old = ag.settings.verbosity
    ag.settings.verbosity = 1
    yield
    ag.settings.verbosity = old
    left = sorted(name for name in _DEFAULT_OUTPUTS if os.path.exists(name) and name not in before)
    assert not left, f"the test wrote {left} in the current directory ({os.getcwd()}): pass run_dir= or tmp_path"


@pytest.fixture(scope="session")
def _pbmc():
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture
def pbmc(_pbmc) -> AnnData:
    """pbmc68k_reduced: 700 cells x 765 genes, obs['bulk_labels'] with 10 types; X is z-scored."""
    return _pbmc.copy()


def as_format_2(path, change=None) -> str:
    """Rewrite the model folder ``path`` as the previous version wrote it (format 2); return its checksum.

    Format 2's checksum covered the weights and only the fields that decide predictions;
    it is computed here from that definition, not by the package. ``change(meta)`` edits
    ``model.json`` first.
    """
    meta = json.loads((path / "model.json").read_text())
    if change is not None:
        change(meta)
    meta["format_version"] = 2
    fields = {k: meta.get(k) for k in ("architecture", "task", "classes", "var_names", "preprocessing")}
    fields.update(target_mean=meta.get("target_mean"), target_std=meta.get("target_std"))
    if meta.get("hierarchy") is not None:
        fields["hierarchy"] = meta["hierarchy"]
    h = hashlib.sha256((path / "weights.msgpack").read_bytes())
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode())
    meta["checksum"] = "sha256:" + h.hexdigest()
    (path / "model.json").write_text(json.dumps(meta, indent=1))
    return meta["checksum"]


def synthetic_counts(n_cells=600, n_genes=200, n_types=4, seed=0, sparse=True) -> AnnData:
    """Negative-binomial counts with a block of marker genes per cell type and varying depth."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(0.6, 1.0, n_genes)
    prog = np.ones((n_types, n_genes))
    block = n_genes // (2 * n_types)
    for t in range(n_types):
        prog[t, t * block : (t + 1) * block] = 6.0
    depth = rng.lognormal(0, 0.4, n_cells)[:, None]
    mu = base[None, :] * prog[types] * depth
    theta = 5.0
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    X = sp.csr_matrix(counts) if sparse else counts
    adata = AnnData(X)
    adata.obs_names = [f"cell{i}" for i in range(n_cells)]
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = np.asarray([f"type{t}" for t in types])
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata


@pytest.fixture
def counts() -> AnnData:
    return synthetic_counts()


class _Records(list):
    @property
    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def ag_log():
    """Messages the package logged (at whatever ag.settings.verbosity allows)."""
    import logging

    records = _Records()

    class _Handler(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = _Handler()
    logger = logging.getLogger("autogenome_sc")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def _trained_counts(tmp_path_factory):
    adata = synthetic_counts()
    path = tmp_path_factory.mktemp("trained") / "model"
    ag.settings.verbosity = 1
    ag.tl.train(adata, "cell_type", config={**FAST, "save": {"path": str(path)}}, rng=0)
    return adata, path


@pytest.fixture
def trained(_trained_counts):
    """(adata trained on synthetic counts with FAST, its model freshly read from disk); one training per module."""
    adata, path = _trained_counts
    return adata.copy(), ag.read_model(path)
