"""Res-VAE (paper Fig. 4a) and a plain VAE, as Flax modules, with their likelihoods.

Encoder and decoder are stacks of FC units (Dense -> BatchNorm -> activation) whose widths
shrink by ``decay`` from ``first_width`` (the decoder mirrors them). In the Res-VAE each
unit reads the concatenation of the outputs of all earlier units of its half (the
decoder's first unit reads the latent code, which joins the concatenation), and the heads
read the concatenation of every unit's output; the plain VAE chains the units.

Likelihoods:

``"mse"``
    Squared error between the 0-1 scaled input and ``sigmoid(decoder)``, summed over genes
    (the paper's reconstruction loss).
``"gaussian"``
    Gaussian negative log-likelihood of the 0-1 scaled input around ``sigmoid(decoder)``
    with a learned gene-wise noise scale ``sigma_g`` (``log sigma_g`` clipped to [-6, 1]).
    With the fixed unit scale that ``"mse"`` implies, a gene's squared error on 0-1 data
    weighs little against the KL term and the code collapses to the prior on narrow data
    (docs/benchmarks.md); a learned scale makes each gene weigh what its residual noise allows.
``"bernoulli"``
    Binary cross entropy of the 0-1 scaled input against ``sigmoid(decoder)``.
``"nb"``
    Negative binomial on raw counts, as in scVI: the network reads the counts, encodes
    ``log1p(counts)``, and the mean of gene g in cell n is ``l_n * softmax(decoder)_g`` with
    ``l_n`` the observed library size; the inverse dispersion ``theta_g`` is gene-wise.

``__call__(x, train)`` returns ``(reconstruction, posterior mean)`` like the supervised
networks return ``(output, embedding)``; the reconstruction is ``sigmoid(decoder)`` in the
scaled space, or the expected counts for ``"nb"``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import gammaln

from .._names import LIKELIHOODS, VAE_MODELS
from ._fc import FCUnit


def nb_log_prob(x: jax.Array, mu: jax.Array, theta: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Log-probability of counts ``x`` under NB(mean ``mu``, inverse dispersion ``theta``).

    Matches ``scipy.stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))``.
    """
    log_theta_mu = jnp.log(theta + mu + eps)
    return (
        gammaln(x + theta)
        - gammaln(theta)
        - gammaln(x + 1.0)
        + theta * (jnp.log(theta + eps) - log_theta_mu)
        + x * (jnp.log(mu + eps) - log_theta_mu)
    )


def layer_widths(n_layers: int, first_width: int, decay: float) -> tuple[int, ...]:
    """Widths of the encoder's FC units: ``first_width * decay**i``, at least 8."""
    return tuple(max(8, int(round(first_width * decay**i))) for i in range(n_layers))


class ResVAE(nn.Module):
    """Variational autoencoder of FC units, with (Res-VAE) or without (VAE) skip connections.

    Attributes
    ----------
    n_genes
        Input and output width.
    n_layers, first_width, decay
        Encoder widths ``first_width * decay**i`` for ``i < n_layers``; the decoder mirrors them.
    latent
        Size of the latent code.
    input_keep
        Keep ratio of the input dropout (1.0: none).
    skip
        Concatenate earlier units' outputs (Res-VAE) or chain the units (plain VAE).
    likelihood
        ``"mse"``, ``"bernoulli"`` or ``"nb"`` (see the module docstring).
    """

    n_genes: int
    n_layers: int = 3
    first_width: int = 512
    decay: float = 0.5
    latent: int = 128
    input_keep: float = 1.0
    skip: bool = True
    likelihood: str = "mse"
    activation: str = "relu"

    def setup(self) -> None:
        widths = layer_widths(self.n_layers, self.first_width, self.decay)
        self.enc = [FCUnit(w, self.activation) for w in widths]
        self.dec = [FCUnit(w, self.activation) for w in widths[::-1]]
        self.z_mean = nn.Dense(self.latent)
        self.z_logvar = nn.Dense(self.latent)
        self.out = nn.Dense(self.n_genes)
        if self.input_keep < 1.0:
            self.drop = nn.Dropout(1.0 - self.input_keep)
        if self.likelihood == "nb":
            self.log_theta = self.param("log_theta", nn.initializers.zeros, (self.n_genes,))
        if self.likelihood == "gaussian":  # starts at sigma = e^-2 (0.14), about a 0-1 gene's spread
            self.log_sigma = self.param("log_sigma", nn.initializers.constant(-2.0), (self.n_genes,))

    def _chain(self, units, h, train: bool, *, keep_first: bool):
        """Run FC units; with skips each reads the concatenation of all earlier outputs."""
        feats = [h] if keep_first else []
        for unit in units:
            inp = jnp.concatenate(feats, axis=-1) if self.skip and feats else h
            h = unit(inp, train)
            feats.append(h)
        if not self.skip:
            return h
        return jnp.concatenate(feats[1:] if keep_first else feats, axis=-1)

    def _encode(self, x, train: bool):
        h = jnp.log1p(x) if self.likelihood == "nb" else x
        if self.input_keep < 1.0:
            h = self.drop(h, deterministic=not train)
        # the gene-wide input does not join the encoder's concatenation: it would dominate every unit
        top = self._chain(self.enc, h, train, keep_first=False)
        mean = self.z_mean(top)
        logvar = jnp.clip(self.z_logvar(top), -12.0, 8.0)
        return mean, logvar

    def _decode(self, z, train: bool):
        return self.out(self._chain(self.dec, z, train, keep_first=True))

    def _mean(self, x, logits):
        if self.likelihood == "nb":
            return jax.nn.softmax(logits, axis=-1) * x.sum(axis=-1, keepdims=True)
        return jax.nn.sigmoid(logits)

    def __call__(self, x, train: bool = False):
        """``(reconstruction, posterior mean)``; decodes the posterior mean (no sampling)."""
        mean, _ = self._encode(x, train)
        logits = self._decode(mean, train)
        return self._mean(x, logits), mean

    def embed(self, x: jax.Array) -> jax.Array:
        """Posterior mean of the latent code (inference mode)."""
        return self._encode(x, False)[0]

    def terms(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """Per-cell ``(reconstruction negative log-likelihood, KL)`` with one sampled code.

        Draws the code with the ``"noise"`` PRNG stream.
        """
        mean, logvar = self._encode(x, train)
        eps = jax.random.normal(self.make_rng("noise"), mean.shape, mean.dtype)
        z = mean + jnp.exp(0.5 * logvar) * eps
        logits = self._decode(z, train)
        if self.likelihood == "nb":
            recon = -nb_log_prob(x, self._mean(x, logits), jnp.exp(self.log_theta)).sum(-1)
        elif self.likelihood == "bernoulli":
            recon = optax.sigmoid_binary_cross_entropy(logits, x).sum(-1)
        elif self.likelihood == "gaussian":
            log_sigma = jnp.clip(self.log_sigma, -6.0, 1.0)
            err = (jax.nn.sigmoid(logits) - x) * jnp.exp(-log_sigma)
            recon = (0.5 * err**2 + log_sigma + 0.5 * jnp.log(2.0 * jnp.pi)).sum(-1)
        else:
            recon = ((jax.nn.sigmoid(logits) - x) ** 2).sum(-1)
        kl = 0.5 * (jnp.exp(logvar) + mean**2 - 1.0 - logvar).sum(-1)
        return recon, kl


def build_vae(arch: dict, n_genes: int) -> ResVAE:
    """Build a (Res-)VAE from an architecture dict ``{"model": "resvae" | "vae", ...}``."""
    arch = dict(arch)
    name = arch.pop("model")
    if name not in VAE_MODELS:
        raise ValueError(f"Unknown VAE model '{name}'; choose 'resvae' or 'vae'.")
    if arch.get("likelihood") not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {arch.get('likelihood')!r}; choose one of {', '.join(LIKELIHOODS)}.")
    keep = {
        k: arch[k] for k in ("n_layers", "first_width", "decay", "latent", "input_keep", "likelihood", "activation")
    }
    return ResVAE(n_genes=n_genes, skip=name == "resvae", **keep)
