"""The main job on bundled real data: pbmc68k_reduced (ships inside scanpy), 700 PBMCs, 10 types.

Run: python tutorials/quickstart.py
"""

import matplotlib

matplotlib.use("Agg")
import scanpy as sc  # noqa: E402

import autogenome_sc as ag  # noqa: E402

adata = sc.datasets.pbmc68k_reduced()
ag.tl.train(adata, "bulk_labels", model="resnet", use_raw=True, rng=0)  # .raw holds log-normalised values

m = adata.uns["ag"]["metrics"]
print(f"test accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} on {m['n_test']} held-out cells")
print(adata.obs[["bulk_labels", "ag_prediction", "ag_confidence", "ag_split"]].head())

# label transfer to a query whose genes are in another order and partly missing
model = ag.read_model(adata.uns["ag"]["model_path"])
query = adata.raw.to_adata()[adata.obs["ag_split"] == "test"]
query = query[:, query.var_names[::-1][:700]].copy()
ag.tl.predict(query, model)
agree = (query.obs["ag_prediction"] == adata.obs.loc[query.obs_names, "ag_prediction"]).mean()
print(f"query with 700 of 765 genes, reversed order: {agree:.0%} of labels unchanged")

ax = ag.pl.confusion_matrix(adata, show=False)
ax.figure.savefig("confusion_matrix.png", dpi=120, bbox_inches="tight")
print("wrote confusion_matrix.png; model saved in", adata.uns["ag"]["model_path"])
