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


def test_quickstart_runs_on_bundled_data(tmp_path):
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
