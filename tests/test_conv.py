"""The convolutional VAEs: shapes, size checks, exact gradients, and learning on real faces."""
import pytest
import torch
from torch.func import functional_call

from vae_visdom.models import MODEL_SPECS, build_model
from vae_visdom.models.conv import ConvVAE
from vae_visdom.train.objectives import elbo_terms


@pytest.mark.parametrize("name, shape", [("conv", (1, 28, 28)), ("conv64", (1, 64, 64)), ("conv64", (3, 64, 64))])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_conv_models_map_images_to_latents_and_back_to_logits_of_the_same_shape(name, shape, likelihood):
    d = MODEL_SPECS[name].defaults
    model = build_model(name, shape, d["latent_dim"], d["hidden_dim"], likelihood)
    x = torch.rand(5, *shape)
    logits, mu, logvar = model(x)
    assert logits.shape == (5, *shape)
    assert mu.shape == logvar.shape == (5, d["latent_dim"])
    assert model.sample_images(torch.randn(3, d["latent_dim"])).shape == (3, *shape)
    assert model.image_shape == shape and model.likelihood == likelihood
    recon, kl = elbo_terms(logits, x, mu, logvar, model.likelihood, model.log_sigma)
    assert recon.shape == kl.shape == (5,) and torch.isfinite(recon + kl).all()


@pytest.mark.parametrize("name, shape, hint", [("conv", (1, 64, 64), "conv64"), ("conv64", (1, 28, 28), "conv"),
                                               ("conv64", (3, 32, 32), "mlp"), ("conv64", (4, 64, 64), "channels")])
def test_a_model_refuses_images_it_was_not_built_for_and_says_which_fits(name, shape, hint):
    with pytest.raises(ValueError, match=hint):
        build_model(name, shape, 8, 32, "bernoulli")


def test_gaussian_decoder_owns_a_learned_sigma_that_trains_saves_and_moves():
    model = build_model("conv64", (1, 64, 64), 8, 32, "gaussian")
    assert isinstance(model.log_sigma, torch.nn.Parameter)
    assert any(p is model.log_sigma for p in model.parameters())  # the optimizer sees it
    assert "log_sigma" in model.state_dict()
    model.double()
    assert model.log_sigma.dtype == torch.float64  # .to() keeps the attribute pointing at the live parameter
    assert build_model("conv64", (1, 64, 64), 8, 32, "bernoulli").log_sigma is None


def test_defaults_suit_each_dataset():
    conv, conv64 = MODEL_SPECS["conv"], MODEL_SPECS["conv64"]
    assert conv.defaults_for("mnist")["likelihood"] == "bernoulli"
    assert conv.defaults_for("fashion-mnist")["likelihood"] == "bernoulli"
    for dataset in ("orl", "folder", "celeba"):
        d = conv64.defaults_for(dataset)
        assert d["likelihood"] == "gaussian" and 16 <= d["latent_dim"] <= 64
        assert set(d) == {"optimizer", "lr", "batch_size", "latent_dim", "hidden_dim", "likelihood"}
    assert conv64.defaults_for("orl")["batch_size"] <= 32  # 360 training faces: enough steps per epoch


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_autograd_gradients_of_the_negative_elbo_match_finite_differences(likelihood):
    """The whole path x -> encoder -> z -> decoder -> -ELBO, for every parameter, in float64."""
    torch.manual_seed(0)
    model = ConvVAE((2, 8, 8), channels=(3, 4), latent_dim=2, hidden_dim=5, likelihood=likelihood).double()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    eps = torch.randn(3, 2, dtype=torch.float64)  # fixed noise: the reparameterised loss is then deterministic
    names = [n for n, _ in model.named_parameters()]

    def loss(*params):
        p = dict(zip(names, params))
        mu, logvar = _call(model, p, "encode", x)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = _call(model, p, "decode", z)
        recon, kl = elbo_terms(logits, x, mu, logvar, likelihood, p.get("log_sigma"))
        return (recon + kl).sum()

    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())
    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


class _Method(torch.nn.Module):
    """Calls model.<method>: torch.func.functional_call swaps parameters in for forward() only."""

    def __init__(self, model, method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, a):
        return getattr(self.model, self.method)(a)


def _call(model, params, method, arg):
    return functional_call(_Method(model, method), {f"model.{k}": v for k, v in params.items()}, (arg,))


def test_a_few_adam_steps_of_conv64_on_orl_faces_lower_the_negative_elbo(tmp_path):
    from vae_visdom.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("orl", cache_dir=tmp_path)
    d = MODEL_SPECS["conv64"].defaults_for("orl")
    model = build_model("conv64", data.image_shape, d["latent_dim"], d["hidden_dim"], d["likelihood"])
    opt = torch.optim.Adam(model.parameters(), lr=d["lr"])
    x_train = data.train.float() / 255  # (360, 1, 64, 64)
    x_test = data.test.float() / 255  # (40, 1, 64, 64)

    def test_loss() -> float:
        with torch.no_grad():
            torch.manual_seed(1)  # the same z noise before and after
            logits, mu, logvar = model(x_test)
            recon, kl = elbo_terms(logits, x_test, mu, logvar, model.likelihood, model.log_sigma)
            return (recon + kl).mean().item()

    before = test_loss()
    for _ in range(15):
        x = x_train[torch.randint(0, len(x_train), (d["batch_size"],))]
        logits, mu, logvar = model(x)
        recon, kl = elbo_terms(logits, x, mu, logvar, model.likelihood, model.log_sigma)
        opt.zero_grad()
        (recon + kl).mean().backward()
        opt.step()
    after = test_loss()
    # measured: ~2000 -> ~300 nats per face; demand a clear drop on held-out faces, not noise
    assert after < before - 500, (before, after)
