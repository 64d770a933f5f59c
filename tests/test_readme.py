"""The README's first command runs tutorials/quickstart.py: keep it true."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_commands_point_at_real_files():
    text = (ROOT / "README.md").read_text()
    main_cmd, test_cmd = re.findall(r"^python3 -m venv .*$", text, flags=re.M)[:2]
    assert "tutorials/quickstart.py" in main_cmd and (ROOT / "tutorials/quickstart.py").is_file()
    assert test_cmd.endswith("-m pytest") and '".[test]"' in test_cmd


def _code(line: str) -> str:
    return line.split("  #")[0].strip()


def test_readme_five_lines_are_the_start_of_quickstart():
    """The README's five-line quickstart runs: tutorials/quickstart.py starts with it (run below)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart: five lines\n\n```python\n(.*?)```", text, flags=re.S).group(1)
    lines = [_code(line) for line in block.splitlines() if _code(line)]
    assert len(lines) == 5 and lines[0] == "import scanpy as sc, autogenome_sc as ag"
    assert [s for s in ("ag.tl.search(", "ag.tl.explain(", "ag.pl.") if not any(s in line for line in lines)] == []
    script = [_code(line) for line in (ROOT / "tutorials/quickstart.py").read_text().splitlines()]
    start = script.index(lines[0])
    assert script[start : start + 5] == lines
    docs = (ROOT / "docs" / "quickstart.md").read_text()  # the documentation's quickstart shows the same lines
    assert "\n".join(lines) in docs


def test_quickstart_runs_on_bundled_data(tmp_path):
    # the script exactly as the README runs it, with the default budget (60 s of search)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "tutorials/quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    acc = float(re.search(r"test accuracy (\d\.\d+)", res.stdout).group(1))
    assert acc >= 0.75
    for fig in ("confusion_matrix", "search_history", "shap_summary"):
        assert (tmp_path / f"{fig}.png").stat().st_size > 10_000
    assert "keep their label" in res.stdout and "top genes for CD19+ B" in res.stdout
    assert any((tmp_path / "ag_models").iterdir())
