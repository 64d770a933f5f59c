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
