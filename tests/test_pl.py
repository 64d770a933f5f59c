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
