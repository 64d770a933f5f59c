import json
import sys
from pathlib import Path

import pytest

import autogenome_sc as ag

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_page_is_current():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import make_config_reference
    finally:
        sys.path.pop(0)
    page = (ROOT / "docs" / "config_reference.md").read_text()
    assert page == make_config_reference.render(), "run `python docs/make_config_reference.py` and commit the page"
    for field in ("search.spaces", "resnet_widths", "heartbeat_interval", "ensemble", "label_smoothing"):
        assert field in page


def test_expert_config_example_is_valid_and_used():
    cfg = ag.config.load(ROOT / "docs" / "expert_config_example.json")
    assert cfg.search.modes == ["resnet", "densenet"] and cfg.search.ensemble == 3
    raw = json.loads((ROOT / "docs" / "expert_config_example.json").read_text())
    assert set(raw) == {"data", "trainer", "loss", "models", "search", "save"}  # the paper's modules


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"search": {"spaces": {"resnet_widths": []}}}, "search.spaces.resnet_widths"),
        ({"search": {"pruner": "median"}}, "search.pruner"),
        ({"search": {"ensemble": 0}}, "search.ensemble"),
        ({"search": {"spaces": {"weight_decay": [1e-2, 1e-4]}}}, "search.spaces.weight_decay"),
        ({"search": {"sapces": {}}}, "unknown key"),
    ],
)
def test_search_config_errors_name_the_field(section, match):
    with pytest.raises(ValueError, match=match):
        ag.config.validate(section)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"trainer": {"max_epochs": "8"}}, r"'trainer.max_epochs': '8' is not a number \(a str\)\.$"),
        ({"trainer": {"max_epochs": True}}, r"'trainer.max_epochs': True is not a number \(a bool\)"),
        ({"trainer": {"learning_rate": "1e-3"}}, r"'trainer.learning_rate': '1e-3' is not a number"),
        ({"trainer": {"learning_rate": float("inf")}}, r"'trainer.learning_rate': Input should be a finite number"),
        ({"trainer": {"data_parallel": "no"}}, r"'trainer.data_parallel': 'no' is not true or false"),
        ({"save": {"overwrite": 1}}, r"'save.overwrite': 1 is not true or false"),
        ({"search": {"compile_ahead": "on"}}, r"'search.compile_ahead': 'on' is not true or false, nor 'auto'\.$"),
        ({"search": {"compile_ahead": 0}}, r"'search.compile_ahead': 0 is not true or false, nor 'auto'\.$"),
        ({"data": {"split": [0.8, 0.1, "0.1"]}}, r"'data.split': '0.1' is not a number"),
        ({"search": {"timeout": "60"}}, r"'search.timeout': '60' is not a number"),
        ({"search": {"cv_seeds": "2"}}, r"'search.cv_seeds': '2' is not a number \(a str\)\.$"),
        ({"search": {"cv_seeds": 0}}, r"'search.cv_seeds': Input should be greater than or equal to 1"),
        ({"search": {"cv_seeds": 9}}, r"'search.cv_seeds': Input should be less than or equal to 8"),
        ({"search": {"spaces": {"n_genes": [None, "500"]}}}, r"'search.spaces.n_genes': '500' is not a number"),
        ({"search": {"spaces": {"densenet_blocks": [[2, "3"]]}}}, r"'search.spaces.densenet_blocks': '3' is not a"),
        ({"search": {"spaces": {"batch_norm": [True, 1]}}}, r"'search.spaces.batch_norm': 1 is not true or false"),
        (
            {"search": {"spaces": {"trees_max_features": [0.0, 0.2]}}},
            r"'search.spaces.trees_max_features': every value "
            r"must be above 0 and at most 1\.$",
        ),
        (
            {"search": {"spaces": {"trees_max_bins": [63, 256]}}},
            r"'search.spaces.trees_max_bins': every value must be whole numbers from 2 to 255\.$",
        ),
        ({"search": {"stack_margin": "x"}}, r"'search.stack_margin': 'x' is not a number \(a str\)\.$"),
        ({"search": {"stack_margin": 2}}, r"'search.stack_margin': Input should be less than or equal to 1"),
        ({"models": {"mlp": {"widths": [8, True]}}}, r"'models.mlp.widths': True is not a number"),
        ({"models": {"mlp": {"widths": [8, 0]}}}, r"'models.mlp.widths': every width must be a positive integer; 0"),
        ({"models": {"mlp": {"widths": [16.5]}}}, r"'models.mlp.widths.0': Input should be a valid integer"),
        ({"models": {"densenet": {"block_structure": [2, -1]}}}, r"'models.densenet.block_structure': every block's"),
        ({"models": {"resvae": {"latent": "5"}}}, r"'models.resvae.latent': the latent size must be 'auto' or a"),
    ],
)
def test_wrong_types_are_refused_not_converted(section, match):
    with pytest.raises(ValueError, match=match):
        ag.config.validate(section)


def test_numbers_of_the_right_kind_are_taken_as_they_are():
    import numpy as np

    cfg = ag.config.validate(
        {"trainer": {"max_epochs": 8.0, "learning_rate": 1, "batch_size": np.int64(64)}, "data": {"n_genes": None}}
    )
    assert (cfg.trainer.max_epochs, cfg.trainer.learning_rate, cfg.trainer.batch_size) == (8, 1.0, 64)
    assert ag.config.validate({"models": {"resvae": {"latent": "auto"}}}).models.resvae.latent == "auto"
