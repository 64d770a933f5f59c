from conftest import FAST

import autogenome_sc as ag
from autogenome_sc import _logging as logg


def test_progress_bar_follows_verbosity():
    ag.settings.verbosity = 0
    assert logg.progress(range(3)).disable
    ag.settings.verbosity = 1
    assert not logg.progress(range(3)).disable
    ag.settings.progress_bar = False
    try:
        assert logg.progress(range(3)).disable
    finally:
        ag.settings.progress_bar = True


def test_verbosity_controls_messages(counts, ag_log):
    ag.settings.verbosity = 1
    ag.tl.train(counts, "cell_type", config=FAST)
    assert "training resnet" not in ag_log.text  # info hidden at verbosity 1
    ag.settings.verbosity = 2
    ag.tl.train(counts, "cell_type", config=FAST)
    assert "training resnet on adata.obs['cell_type']" in ag_log.text
    assert "added 'ag_prediction', 'ag_confidence', 'ag_uncertainty' (adata.obs)" in ag_log.text
    assert ag.settings.device.startswith("cpu")
