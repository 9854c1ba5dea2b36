"""deltastats.torch: δ of a torch MLP with fixed weights equals the engine's, a torch MLP with
ds.MLP's weight law agrees with ds.estimate, conv and residual + LayerNorm nets run, bad input."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import deltastats as ds  # noqa: E402
from deltastats import torch as dst  # noqa: E402

WIDTHS = (4, 6, 5, 2)


def _torch_mlp(widths, activation=torch.nn.Tanh):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=torch.float64))
        if i < len(widths) - 2:
            layers.append(activation())
    return torch.nn.Sequential(*layers)


def _mse(output, y):
    return 0.5 * ((output - y) ** 2).sum(dim=1)  # per sample: ½‖g − y‖²


def test_fixed_weights_give_the_engines_delta_to_1e_12():
    net = ds.MLP(WIDTHS, activation="tanh", sigma_w=1.3, sigma_b=0.2, mu_w=0.4)
    params = net.sample(1, 7)
    x = ds.inputs.gaussian().sample(4, 9, 7, n_networks=1)
    y = ds.targets.gaussian(0.5).sample(x, 2, 7)
    ref = ds.backprop(net, params, x, y)
    model = _torch_mlp(WIDTHS)
    with torch.no_grad():
        for l, lin in enumerate(model[::2]):
            lin.weight.copy_(torch.from_numpy(params.weights[l][0]))
            lin.bias.copy_(torch.from_numpy(params.biases[l][0]))
    tr = dst.trace(
        model, torch.from_numpy(x[0]), torch.from_numpy(y[0]), _mse, modules=["0", "2", "4"]
    )
    for l, name in enumerate(["0", "2", "4"]):
        np.testing.assert_allclose(tr.delta[name], ref.delta[l][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(tr.z[name], ref.z[l][0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(tr.grads[name], ref.grad_weights[l][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.loss, ref.loss[0], rtol=1e-13)
    assert np.abs(ref.delta[0]).max() > 1e-3  # not a vacuous comparison


def test_in_place_ops_after_a_module_do_not_change_its_z_or_delta():
    def model(inplace):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(3, 4, dtype=torch.float64),
            torch.nn.ReLU(inplace=inplace),
            torch.nn.Linear(4, 1, dtype=torch.float64),
        )

    x, y = torch.randn(6, 3, dtype=torch.float64), torch.zeros(6, 1, dtype=torch.float64)
    a = dst.trace(model(False), x, y, _mse, modules=["0"])
    b = dst.trace(model(True), x, y, _mse, modules=["0"])
    np.testing.assert_array_equal(a.z["0"], b.z["0"])
    np.testing.assert_array_equal(a.delta["0"], b.delta["0"])
    assert (a.z["0"] < 0).any()  # ReLU(inplace=True) would have clipped these


def _law_model(seed, widths=(5, 8, 8, 1), sigma_w=1.4, sigma_b=0.3):
    """A torch MLP drawn from ds.MLP's law: W ~ N(0, σ_w²/n_in), b ~ N(0, σ_b²)."""
    g = torch.Generator().manual_seed(seed)
    model = _torch_mlp(widths)
    with torch.no_grad():
        for lin in model[::2]:
            n_in = lin.weight.shape[1]
            lin.weight.normal_(0.0, sigma_w / np.sqrt(n_in), generator=g)
            lin.bias.normal_(0.0, sigma_b, generator=g)
    return model


def _gaussian_batch(seed, B=8, n0=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n0, generator=g, dtype=torch.float64), torch.zeros(B, 1)


def test_torch_mlp_with_the_engines_law_agrees_with_estimate():
    M = 300
    est = dst.estimate(
        _law_model, _gaussian_batch, _mse, n_networks=M, modules=["0", "2", "4"], progress=False
    )
    net = ds.MLP((5, 8, 8, 1), activation="tanh", sigma_w=1.4, sigma_b=0.3)
    ref = ds.estimate(net, ds.inputs.gaussian(), ds.targets.zeros(), n_networks=M, batch=8)
    assert est.per_layer("delta_sq")["name"].tolist() == ["0", "2", "4"]
    for stat in ("delta_sq", "z_var", "delta_mean", "grad_w_sq"):
        for layer in (1, 2, 3):
            a, b = est.result(stat, layer), ref.result(stat, layer)
            se = np.hypot(a.standard_error, b.standard_error)
            assert abs(a.estimate - b.estimate) <= 4 * se, (stat, layer, a, b)
    # Deterministic from the seed.
    again, same = (
        dst.estimate(
            _law_model, _gaussian_batch, _mse, n_networks=100, modules=["0"], progress=False, seed=3
        )
        for _ in range(2)
    )
    np.testing.assert_array_equal(again.table["estimate"], same.table["estimate"])


class _Residual(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.fc(self.norm(x)))


def test_residual_layernorm_and_conv_nets_run():
    def resnet(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(6, 10), _Residual(10), _Residual(10), torch.nn.Linear(10, 1)
        )

    def data(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(4, 6, generator=g), torch.randn(4, 1, generator=g)

    mods = ["0", "1", "2.fc", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)
        est = dst.estimate(resnet, data, _mse, n_networks=30, modules=mods, progress=False)
    t = est.per_layer("delta_sq")
    assert t["name"].tolist() == mods and np.isfinite(t["estimate"]).all()
    # Weight gradients where the module has a weight: Linear "0", "2.fc"; the blocks have none.
    g = est.per_layer("grad_w_sq")
    assert g["name"].tolist() == ["0", "2.fc"]

    def convnet(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 2)
        )

    def images(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(5, 1, 6, 6, generator=g), torch.randn(5, 2, generator=g)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ds.FewNetworksWarning)
        est = dst.estimate(convnet, images, _mse, n_networks=20, modules=["0", "3"], progress=False)
    units = est.per_unit("delta_sq")
    assert (units["layer"] == 1).sum() == 3 * 4 * 4  # channels × positions
    # grad_w_sq of the conv kernel (3, 1, 3, 3) is E‖∂J/∂W‖² with its 27 entries.
    model = convnet(dst.network_seeds(0, 0)[0])
    x, y = images(dst.network_seeds(0, 0)[1])
    tr = dst.trace(model, x, y, _mse, modules=["0"])
    assert tr.grads["0"].shape == (3, 1, 3, 3) and tr.delta["0"].shape == (5, 48)


def test_bad_torch_input_gives_clear_errors():
    kw = dict(n_networks=4, progress=False)
    cases = [
        (dict(modules=["9"]), r"modules: no module named '9' in the model"),
        (dict(modules="0"), r"modules must be a non-empty list"),
        (dict(modules=["0", "0"]), r"modules lists a name twice"),
        (dict(modules=["0"], n_networks=1), r"n_networks must be an int >= 2"),
        (dict(modules=["0"], device="tpu9"), r"device must be"),
        (dict(modules=["0"], method="bayes"), r"unknown method"),
    ]
    if not torch.cuda.is_available():
        cases.append((dict(modules=["0"], device="cuda"), r"CUDA is not available"))
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            dst.estimate(_law_model, _gaussian_batch, _mse, **{**kw, **extra})

    def mean_loss(output, y):
        return _mse(output, y).mean()

    with pytest.raises(ValueError, match=r"per-sample losses of shape \(B,\) = \(8,\), got \(\)"):
        dst.estimate(_law_model, _gaussian_batch, mean_loss, modules=["0"], **kw)

    def batchnorm(seed):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(5, 4, dtype=torch.float64),
            torch.nn.BatchNorm1d(4, dtype=torch.float64),
            torch.nn.Linear(4, 1, dtype=torch.float64),
        )

    with pytest.warns(dst.SampleCouplingWarning, match="BatchNorm in training mode"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ds.FewNetworksWarning)
            dst.estimate(batchnorm, _gaussian_batch, _mse, modules=["0"], **kw)
