import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import autogenome_sc as ag  # noqa: E402


def test_confusion_matrix_labels_classes(trained):
    trained, _ = trained
    ax = ag.pl.confusion_matrix(trained, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(trained.uns["ag"]["classes"])
    assert ax.get_ylabel() == "true" and "accuracy" in ax.get_title()
    fig, own = plt.subplots()
    assert ag.pl.confusion_matrix(trained, normalize=False, ax=own, show=False) is own
    plt.close("all")


def test_training_history_marks_kept_epoch(trained):
    trained, _ = trained
    ax = ag.pl.training_history(trained, show=False)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["train loss", "validation loss"] and labels[2].startswith("kept (epoch")
    plt.close("all")


def test_plots_name_the_call_to_run_first(counts):
    with pytest.raises(KeyError, match=r"Did not find adata.uns\['ag'\]\['metrics'\]. Run `ag.tl.train` first."):
        ag.pl.confusion_matrix(counts, show=False)
    with pytest.raises(KeyError, match="Run `ag.tl.train` first"):
        ag.pl.training_history(counts, show=False)


def test_search_history_gives_every_mode_its_own_colour():
    import numpy as np
    import pandas as pd
    from anndata import AnnData
    from matplotlib.colors import to_hex

    modes = ["linear", "logistic", "svm", "trees", "mlp", "resnet", "densenet", "enas", "mine", "yours"]
    board = pd.DataFrame(
        {
            "trial": np.arange(len(modes)),
            "mode": modes,
            "state": ["complete"] * len(modes),
            "value": np.linspace(1.0, 0.5, len(modes)),
        }
    )
    a = AnnData(np.zeros((2, 2), np.float32))
    a.uns["ag"] = {"leaderboard": board, "best": {"metric": "val_loss"}}
    ax = ag.pl.search_history(a, show=False)
    colours = {c.get_label(): to_hex(c.get_facecolor()[0]) for c in ax.collections}
    assert set(colours) == set(modes) and len(set(colours.values())) == len(modes)
    from autogenome_sc._names import BUILTIN_MODES
    from autogenome_sc.pl._utils import MODE_COLOURS

    assert set(MODE_COLOURS) == set(BUILTIN_MODES) and len(set(MODE_COLOURS.values())) == len(BUILTIN_MODES)
    again = ag.pl.search_history(a, show=False)  # the same colours in every plot
    assert {c.get_label(): to_hex(c.get_facecolor()[0]) for c in again.collections} == colours
    plt.close("all")


def test_print_versions_names_what_a_bug_report_needs():
    import io

    buf = io.StringIO()
    ag.print_versions(file=buf)
    lines = dict(line.split(None, 1) for line in buf.getvalue().splitlines() if not line.startswith("jax devices"))
    assert lines["autogenome_sc"].strip() == ag.__version__
    for name in ("python", "jax", "flax", "anndata", "scanpy", "numpy"):
        assert lines[name].strip()[0].isdigit(), name
    import jax

    assert jax.default_backend() in buf.getvalue().splitlines()[-1]
