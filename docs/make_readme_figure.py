"""Draw the README's figure with the package itself: the five quickstart lines, then two plots.

Run from the repository root: python docs/make_readme_figure.py  (about 4 minutes on 2 CPU cores)
Writes docs/_static/readme_figure.png; models and the study journal go to a temporary folder.
"""

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import scanpy as sc  # noqa: E402

import autogenome_sc as ag  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "readme_figure.png"

with tempfile.TemporaryDirectory() as tmp:
    os.chdir(tmp)
    ag.settings.model_dir = Path(tmp) / "models"
    adata = sc.datasets.pbmc68k_reduced()
    ag.tl.search(adata, "bulk_labels", use_raw=True)
    ag.tl.explain(adata, max_cells=300)

    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1, 1.15]})
    ag.pl.shap_summary(adata, n_genes=15, ax=left, show=False)
    ag.pl.confusion_matrix(adata, ax=right, show=False)
    m = adata.uns["ag"]["metrics"]
    right.set_title(f"test split: accuracy {m['accuracy']:.2f}, macro-F1 {m['macro_f1']:.2f} ({m['n_test']} cells)")
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print("wrote", OUT, f"({OUT.stat().st_size // 1024} KB)")
