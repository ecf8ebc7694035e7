"""`corral._models.Models`: tier and model names to priced models, each built once."""

from __future__ import annotations

import pytest

from corral._models import Models
from corral.config import AppConfig
from corral.errors import UnknownNameError
from corral.model import Model
from corral.testing import FakeModel


def models(config: AppConfig, extra: dict[str, Model] | None = None) -> tuple[Models, list[str]]:
    built: list[str] = []

    def build(name: str, cfg: AppConfig) -> Model:
        built.append(name)
        return FakeModel([], name=name)

    return Models(lambda: config, dict(extra or {}), build, lambda m: m), built


def test_a_tier_resolves_to_its_model_built_once():
    resolver, built = models(AppConfig(tiers={"small": "sim:small"}))
    first = resolver.model("small")
    assert first is resolver.model("sim:small") and first.name == "sim:small"
    assert built == ["sim:small"]


def test_a_chain_is_the_primary_then_each_fallback_once():
    config = AppConfig(
        tiers={"small": "a:1"}, fallbacks={"small": ["b:1", "a:1"], "a:1": ["c:1", "b:1"]}
    )
    resolver, _ = models(config)
    chain = resolver.chain("small")
    assert [m.name for m in chain] == ["a:1", "b:1", "c:1"]
    assert resolver.chain("small") is chain


def test_extra_models_come_before_providers_and_unknown_names_are_errors():
    mine = FakeModel([], name="mine:fast")
    resolver, built = models(AppConfig(), {"mine:fast": mine})
    assert resolver.model("mine:fast") is mine and built == []
    with pytest.raises(UnknownNameError):
        resolver.model("nonsense")


def test_the_config_is_read_on_use():
    config = AppConfig(tiers={"small": "a:1"})
    box = [config]
    resolver = Models(lambda: box[0], {}, lambda n, c: FakeModel([], name=n), lambda m: m)
    box[0] = AppConfig(tiers={"small": "b:1"})
    assert resolver.model("small").name == "b:1"
