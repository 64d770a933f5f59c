"""The main job on bundled real data: pbmc68k_reduced (ships inside scanpy), 700 PBMCs, 10 types.

Searches logistic regressions, a linear SVM, MLP, RFCN-ResNet and RFCN-DenseNet with the default budget (60 s of
search, then the final fit), evaluates the winner once on the held-out test split, transfers its labels to
a query with other genes, explains it with SHAP values and draws three figures.

Run: python tutorials/quickstart.py
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402, I001

# The README's five lines, verbatim (tests/test_readme.py checks it)
# fmt: off
import scanpy as sc, autogenome_sc as ag  # noqa: E401, E402
adata = sc.datasets.pbmc68k_reduced()  # .raw holds log-normalised values
ag.tl.search(adata, "bulk_labels", use_raw=True)
ag.tl.explain(adata, max_cells=300)
ag.pl.shap_summary(adata)  # with the Agg backend nothing is shown; the figure is saved below
# fmt: on
plt.gcf().savefig("shap_summary.png", dpi=120, bbox_inches="tight")

m = adata.uns["ag"]["metrics"]
print(f"test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} on {m['n_test']} held-out cells")
board = adata.uns["ag"]["leaderboard"]
print(board.sort_values("value").head(5)[["trial", "mode", "state", "value", "seconds"]].to_string(index=False))

# label transfer to a query whose genes are in another order and partly missing
model = ag.read_model(adata.uns["ag"]["model_path"])
query = adata.raw.to_adata()[adata.obs["ag_split"] == "test"]
query = query[:, query.var_names[::-1][:700]].copy()
ag.tl.predict(query, model, reject=0.5)
pred = query.obs["ag_prediction"].astype(str)
assigned = pred != "Unassigned"
agree = (pred[assigned] == adata.obs.loc[query.obs_names[assigned], "ag_prediction"].astype(str)).mean()
print(
    f"query with 700 of 765 genes, reversed order: {(~assigned).sum()} cells 'Unassigned' (confidence < 0.5 or "
    f"unfamiliar), {agree:.0%} of the others keep their label"
)

# which genes drive each prediction (SHAP values by expected gradients, computed above)
print("top genes for CD19+ B:", ", ".join(ag.get.importance_df(adata, "CD19+ B").index[:8]))

for name, plot in [("confusion_matrix", ag.pl.confusion_matrix), ("search_history", ag.pl.search_history)]:
    ax = plot(adata, show=False)
    ax.figure.savefig(f"{name}.png", dpi=120, bbox_inches="tight")
print("wrote confusion_matrix.png, search_history.png, shap_summary.png; model saved in", adata.uns["ag"]["model_path"])
