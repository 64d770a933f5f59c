import jax
import numpy as np
import pytest

from autogenome_sc.nn import FCUnit, build_network


def _init(arch, n_in=20, n_out=3):
    net = build_network(arch, n_out)
    x = jax.random.normal(jax.random.key(0), (5, n_in))
    variables = net.init(jax.random.key(1), x, train=False)
    return net, variables, x


@pytest.mark.parametrize(
    ("arch", "emb_dim"),
    [
        ({"model": "mlp", "widths": [16, 8]}, 8),
        ({"model": "resnet", "width": 12, "n_blocks": 3}, 12),
        # stem 2g=8, block1: 8+2*4=16 -> transition 8, block2: 8+3*4=20 (last block, no transition)
        ({"model": "densenet", "block_structure": [2, 3], "growth_rate": 4, "compression": 0.5}, 20),
    ],
)
def test_output_and_embedding_shapes(arch, emb_dim):
    net, variables, x = _init(arch)
    out, emb = net.apply(variables, x, train=False)
    assert out.shape == (5, 3) and emb.shape == (5, emb_dim)
    assert "batch_stats" in variables  # every FC unit has BatchNorm


def test_resnet_units_add_their_input():
    net, variables, x = _init({"model": "resnet", "width": 6, "n_blocks": 2, "input_keep": 1.0, "dropout": 0.0})
    p, b = variables["params"], variables["batch_stats"]

    def unit(i, h):
        return FCUnit(6).apply({"params": p[f"FCUnit_{i}"], "batch_stats": b[f"FCUnit_{i}"]}, h, False)

    h0 = unit(0, x)
    h1 = h0 + unit(1, h0)
    h2 = h1 + unit(2, h1)
    _, emb = net.apply(variables, x, train=False)
    np.testing.assert_allclose(emb, h2, rtol=1e-5, atol=1e-6)


def test_densenet_units_take_all_earlier_outputs():
    net, variables, x = _init(
        {"model": "densenet", "block_structure": [2], "growth_rate": 3, "dropout": 0.0, "input_keep": 1.0}
    )
    p = variables["params"]
    # stem -> 6 features; unit 1 reads 6, unit 2 reads 6 + 3 (stem and unit 1)
    assert p["FCUnit_1"]["Dense_0"]["kernel"].shape == (6, 3)
    assert p["FCUnit_2"]["Dense_0"]["kernel"].shape == (9, 3)


def test_input_dropout_only_in_training():
    net, variables, x = _init({"model": "mlp", "widths": [8], "input_keep": 0.5})
    a, _ = net.apply(variables, x, train=False)
    b, _ = net.apply(variables, x, train=False)
    np.testing.assert_array_equal(a, b)
    (c, _), _ = net.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"])
    (d, _), _ = net.apply(variables, x, train=True, rngs={"dropout": jax.random.key(4)}, mutable=["batch_stats"])
    assert not np.allclose(c, d)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="Unknown model 'cnn'"):
        build_network({"model": "cnn"}, 2)
