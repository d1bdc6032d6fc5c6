"""One set of rules: TrainConfig.validate, the CLI and the panel agree."""
import pytest

from vae_visdom.config import (
    MODEL_NAMES,
    RULES,
    ConfigError,
    TrainConfig,
    argparse_type,
    parse_value,
    with_model_defaults,
)
from vae_visdom.models import MODEL_SPECS


@pytest.mark.parametrize("field,value", [("dataset", "imagenet"), ("model", "resnet"), ("optimizer", "lbfgs"),
                                         ("device", "tpu"), ("precision", "fp8"), ("fast_step", "warp"),
                                         ("likelihood", "poisson")])
def test_unknown_choices_name_the_field_and_what_is_allowed(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}: unknown value '{value}'; allowed: "):
        TrainConfig(**{field: value}).validate()


def test_numbers_are_checked_by_the_same_rules_as_the_cli_and_panel():
    with pytest.raises(ConfigError, match="lr: -1 out of range"):
        TrainConfig(lr=-1).validate()
    assert TrainConfig(lr="3e-4", epochs="5").validate().lr == 3e-4
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="out of range; allowed: a number in"):
        argparse_type("lr")("-1")


def test_every_live_rule_says_when_it_applies():
    live = {name for name, rule in RULES.items() if rule.live}
    assert live == {"lr", "batch_size", "epochs", "log_interval", "beta"}
    assert all(RULES[name].applies for name in live)
    assert parse_value("batch_size", "64", {"n_train": 100}) == 64


def test_model_defaults_fill_only_what_was_not_given():
    cfg = with_model_defaults(TrainConfig(model="mlp-paper", lr=0.05).validate())
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.hidden_dim) == ("adagrad", 0.05, 100, 500)


def test_the_rule_table_names_every_model_the_registry_builds():
    """config checks model names without importing torch; the registry must build exactly those."""
    assert tuple(MODEL_SPECS) == MODEL_NAMES == RULES["model"].choices


def test_every_field_with_a_rule_is_a_config_field_and_choices_go_through_parse_value():
    fields = set(TrainConfig.__dataclass_fields__)
    assert set(RULES) <= fields
    assert parse_value("optimizer", "adagrad") == "adagrad"
    with pytest.raises(ConfigError, match=r"^optimizer: unknown value 'lbfgs'; allowed: adam, adagrad, sgd$"):
        parse_value("optimizer", "lbfgs")
    with pytest.raises(ConfigError, match=r"^device: unknown value 3; allowed: auto, cpu, cuda$"):
        parse_value("device", 3)  # a number where a word belongs (a hand-edited config.json)
