"""Gradient-boosted trees as arrays: a Flax module that evaluates a fitted ensemble of trees in JAX.

The trees are fitted elsewhere (``train/_trees.py``, scikit-learn's
``HistGradientBoostingClassifier``); here they are constants of the ``"params"`` collection, so a
tree model saves, loads, predicts, joins the model's calibration and runs on any device as every
other network does. Each of the ``n_trees`` trees is ``n_nodes`` long (shorter trees padded with
leaves) and adds its leaf's value to one output (``tree_class``):

``feature``, ``threshold``
    A split node sends a cell left when ``x[feature] <= threshold``, else right.
``left``, ``right``
    The children's positions in the same tree; a leaf points at itself, so ``depth`` steps from
    the root (node 0) end on a leaf whatever the path.
``value``
    The leaf's value (0 elsewhere); ``base`` is added to the outputs once.

Positions and gene numbers are stored as float32 (exact below 2**24), cast to integers here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

#: The arrays of every tree, each ``(n_trees, n_nodes)``.
NODE_ARRAYS = ("feature", "threshold", "left", "right", "value")


class Trees(nn.Module):
    """A boosted ensemble of ``n_trees`` trees of ``n_nodes`` nodes and at most ``depth`` levels; logits out.

    Its embedding is its output (the class logits), as for the linear model.
    """

    n_out: int
    n_trees: int = 1
    n_nodes: int = 1
    depth: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False, rates=None):
        shape = (self.n_trees, self.n_nodes)
        # jnp.asarray: variables may come in as numpy arrays (a loaded model), which traced indices cannot index
        a = {name: jnp.asarray(self.param(name, nn.initializers.zeros, shape, jnp.float32)) for name in NODE_ARRAYS}
        tree_class = jnp.asarray(self.param("tree_class", nn.initializers.zeros, (self.n_trees,), jnp.float32))
        base = jnp.asarray(self.param("base", nn.initializers.zeros, (self.n_out,), jnp.float32))
        last = self.n_nodes - 1
        feature = jnp.clip(a["feature"].astype(jnp.int32), 0, x.shape[-1] - 1)
        left = jnp.clip(a["left"].astype(jnp.int32), 0, last)
        right = jnp.clip(a["right"].astype(jnp.int32), 0, last)
        trees = jnp.arange(self.n_trees)
        x = x.astype(jnp.float32)

        def step(node, _):
            # node: (cells, trees) positions; each cell reads the gene its node splits on
            genes = feature[trees, node]
            goes_left = jnp.take_along_axis(x, genes, axis=1) <= a["threshold"][trees, node]
            return jnp.where(goes_left, left[trees, node], right[trees, node]), None

        start = jnp.zeros((x.shape[0], self.n_trees), jnp.int32)
        leaves, _ = jax.lax.scan(step, start, None, length=self.depth)
        per_tree = a["value"][trees, leaves]  # (cells, trees)
        to_class = jax.nn.one_hot(tree_class.astype(jnp.int32), self.n_out, dtype=jnp.float32)
        out = jnp.dot(per_tree, to_class, precision=jax.lax.Precision.HIGHEST) + base
        return out, out
