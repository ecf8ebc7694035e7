"""Configuration: every key optional with a safe default; an unknown key or a bad value is a
`ConfigError` that starts with the key path, whether it comes from a file or from Python."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from corral import AppConfig, ModelPrice, SimConfig
from corral.config import load_config, parse_config, parse_guards
from corral.errors import ConfigError
from corral.guards import BudgetPolicy, DailyLimit, GuardPolicies, LoopPolicy, RateLimit
from corral.observe import AlertPolicy, OtlpConfig


def key_of(call: object) -> str | None:
    """The key path of the `ConfigError` that `call()` raises (its message starts with it)."""
    with pytest.raises(ConfigError) as info:
        call()  # type: ignore[operator]
    error = info.value
    if error.key is not None:
        assert str(error).startswith(f"{error.key}: ")
    return error.key


# -- unknown keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"sim": {"sed": 1}}, "sim.sed", id="sim"),
        pytest.param(
            {"providers": {"openai": {"url": "x"}}}, "providers.openai.url", id="provider"
        ),
        pytest.param({"guards": {"budget": {"dollars": 1}}}, "guards.budget.dollars", id="budget"),
        pytest.param({"guards": {"loops": {"max_turn": 1}}}, "guards.loops.max_turn", id="loops"),
        pytest.param(
            {"guards": {"daily": {"project": {"usdd": 1}}}},
            "guards.daily.project.usdd",
            id="daily",
        ),
        pytest.param({"alerts": {"cooldown": 1}}, "alerts.cooldown", id="alerts"),
        pytest.param({"otlp": {"endpoints": "x"}}, "otlp.endpoints", id="otlp"),
        pytest.param({"humans": {"approve": 1}}, "humans.approve", id="humans"),
        pytest.param(
            {"prices": {"sim": {"input_per_mtok": 1, "output_per_mtok": 1, "cached": 0}}},
            "prices.sim.cached",
            id="price",
        ),
    ],
)
def test_an_unknown_key_anywhere_is_refused_with_its_full_path(data, key):
    with pytest.raises(ConfigError, match="unknown key") as info:
        parse_config(data)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")
    assert info.value.to_dict()["key"] == key and info.value.code == "config_error"


def test_an_unknown_guard_section_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        parse_guards({"breakers": {}})
    assert info.value.key == "guards.breakers"
    assert "'breaker'" in info.value.reason and "'budget'" in info.value.reason


def test_an_unknown_key_in_a_file_names_its_path(tmp_path: Path):
    path = tmp_path / "corral.toml"
    path.write_text('[guards.retry]\nmax_attempts = 3\nbackof = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "guards.retry.backof"


def test_a_section_that_is_not_a_table_is_refused():
    assert key_of(lambda: parse_guards({"budget": 5})) == "guards.budget"
    assert key_of(lambda: parse_guards({"limits": ["x"]})) == "guards.limits"
    assert key_of(lambda: parse_guards({"degrade_order": "large"})) == "guards.degrade_order"


# -- negative and out-of-range limits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"call_timeout_s": 0}, "call_timeout_s", id="call-timeout"),
        pytest.param({"sim": {"latency_s": -0.5}}, "sim.latency_s", id="sim-latency"),
        pytest.param({"sim": {"rpm": 0}}, "sim.rpm", id="sim-rpm"),
        pytest.param({"guards": {"budget": {"tokens": -1}}}, "guards.budget.tokens", id="tokens"),
        pytest.param(
            {"guards": {"budget": {"model_calls": -3}}}, "guards.budget.model_calls", id="calls"
        ),
        pytest.param(
            {"guards": {"budget": {"degrade_at": 0}}}, "guards.budget.degrade_at", id="degrade-at"
        ),
        pytest.param(
            {"guards": {"daily": {"tenant:acme": {"usd": -1}}}},
            "guards.daily.tenant:acme.usd",
            id="daily-usd",
        ),
        pytest.param({"guards": {"loops": {"max_turns": 0}}}, "guards.loops.max_turns", id="turns"),
        pytest.param(
            {"guards": {"retry": {"max_attempts": 0}}}, "guards.retry.max_attempts", id="attempts"
        ),
        pytest.param({"guards": {"cache": {"ttl_s": 0}}}, "guards.cache.ttl_s", id="cache-ttl"),
        pytest.param(
            {"providers": {"openai": {"timeout_s": -1}}},
            "providers.openai.timeout_s",
            id="provider-timeout",
        ),
    ],
)
def test_a_negative_or_out_of_range_limit_in_a_file_names_its_path(data, key):
    assert key_of(lambda: parse_config(data)) == key


@pytest.mark.parametrize(
    ("build", "key"),
    [
        pytest.param(lambda: AppConfig(deadline_s=0), "deadline_s", id="deadline"),
        pytest.param(lambda: AppConfig(call_timeout_s=-1), "call_timeout_s", id="call-timeout"),
        pytest.param(lambda: AppConfig(gc_threshold=50), "gc_threshold", id="gc-threshold"),
        pytest.param(
            lambda: AppConfig(sim=SimConfig(timeout_rate=-0.1)), "sim.timeout_rate", id="sim-rate"
        ),
        pytest.param(lambda: BudgetPolicy(usd=Decimal("-0.01")), "guards.budget.usd", id="usd"),
        pytest.param(lambda: DailyLimit(tokens=-1), "guards.daily.tokens", id="daily"),
        pytest.param(
            lambda: LoopPolicy(ping_pong_cycles=1), "guards.loops.ping_pong_cycles", id="pp"
        ),
        pytest.param(lambda: RateLimit(rpm=-1), "guards.limits.rpm", id="rpm"),
        pytest.param(
            lambda: AlertPolicy(webhook_url="ftp://hooks"), "alerts.webhook_url", id="webhook"
        ),
    ],
)
def test_python_callers_get_the_same_checks_as_files(build, key):
    """`AppConfig(...)` and the policies validate themselves: no path around the checks."""
    assert key_of(build) == key


def test_zero_is_a_limit_and_none_is_no_limit():
    zero = BudgetPolicy(usd=Decimal(0), tokens=0, model_calls=0)
    assert (zero.usd, zero.tokens, zero.model_calls) == (Decimal(0), 0, 0)
    none = BudgetPolicy(usd=None, tokens=None, model_calls=None)
    assert (none.usd, none.tokens, none.model_calls) == (None, None, None)
    assert AppConfig(gc_threshold=0).gc_threshold == 0  # 0: leave Python's threshold alone


# -- defaults -------------------------------------------------------------------------------------


def test_no_file_means_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # no corral.toml here
    assert load_config() == AppConfig() == parse_config({})


def test_an_explicit_path_that_does_not_exist_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_an_empty_file_means_the_defaults(tmp_path: Path):
    path = tmp_path / "corral.toml"
    path.write_text("")
    assert load_config(path) == AppConfig()


def test_the_defaults_are_safe_for_production():
    cfg = AppConfig()
    assert cfg.durable and cfg.deadline_s == 900 and cfg.call_timeout_s == 120
    assert cfg.database == "sqlite:///.corral/corral.db"
    assert cfg.tiers == {"small": "sim:small", "medium": "sim:medium", "large": "sim:large"}
    guards = cfg.guards
    assert guards == GuardPolicies()
    assert (guards.budget.usd, guards.budget.tokens, guards.budget.model_calls) == (
        Decimal(5),
        2_000_000,
        500,
    )
    assert guards.loops.max_turns == 200 and guards.retry.max_attempts >= 1
    assert cfg.otlp.endpoint is None and cfg.trace == AppConfig().trace


def test_a_partial_table_keeps_the_other_defaults():
    cfg = parse_config({"tiers": {"large": "openai:gpt-4o"}, "guards": {"budget": {"usd": "0.5"}}})
    assert cfg.tiers == {"small": "sim:small", "medium": "sim:medium", "large": "openai:gpt-4o"}
    assert cfg.guards.budget.usd == Decimal("0.5")
    assert cfg.guards.budget.tokens == BudgetPolicy().tokens
    assert cfg.guards.loops == LoopPolicy()
    # A price given for one provider adds to the built-in ones instead of replacing them.
    priced = parse_config({"prices": {"openai": {"input_per_mtok": 1, "output_per_mtok": 2}}})
    assert set(priced.prices) == {"sim", "local", "openai"}


def test_prices_given_in_python_keep_the_defaults_for_the_keys_they_do_not_name():
    """`AppConfig(prices=...)` used to replace the sim and local prices (and every start of an app
    on the sim tiers warned about unpriced models)."""
    gpt = ModelPrice(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))
    cfg = AppConfig(prices={"openai:gpt-4o-mini": gpt})
    assert cfg.prices == {**AppConfig().prices, "openai:gpt-4o-mini": gpt}
    # A default is overridden by naming its key; a concrete model's key sits beside it.
    large = ModelPrice(input_per_mtok=Decimal(3), output_per_mtok=Decimal(9))
    own = AppConfig(prices={"sim": gpt, "sim:large": large}).prices
    assert own == {"sim": gpt, "sim:large": large, "local": AppConfig().prices["local"]}
    assert replace(cfg, durable=False).prices == cfg.prices


def test_a_price_given_as_a_plain_number_is_kept_as_decimal():
    price = ModelPrice(input_per_mtok=0.1, output_per_mtok=2)  # type: ignore[arg-type]
    assert (price.input_per_mtok, price.output_per_mtok) == (Decimal("0.1"), Decimal(2))


@pytest.mark.parametrize(
    ("build", "key", "message"),
    [
        pytest.param(
            lambda: AppConfig(prices={"sim": ModelPrice(input_per_mtok=-1, output_per_mtok=1)}),  # type: ignore[arg-type]
            "prices.sim",
            "finite and >= 0",
            id="negative",
        ),
        pytest.param(
            lambda: AppConfig(
                prices={"x": ModelPrice(input_per_mtok=Decimal("NaN"), output_per_mtok=Decimal(1))}
            ),
            "prices.x",
            "finite and >= 0",
            id="nan",
        ),
        pytest.param(
            lambda: AppConfig(prices={"x": {"input_per_mtok": 1, "output_per_mtok": 1}}),  # type: ignore[dict-item]
            "prices.x",
            "must be a ModelPrice",
            id="not-a-price",
        ),
        pytest.param(
            lambda: ModelPrice(input_per_mtok="cheap", output_per_mtok=1),  # type: ignore[arg-type]
            None,
            "ModelPrice.input_per_mtok must be a number, got 'cheap'",
            id="not-a-number",
        ),
        pytest.param(
            lambda: parse_config(
                {"prices": {"openai": {"input_per_mtok": -1, "output_per_mtok": 1}}}
            ),
            "prices.openai.input_per_mtok",
            "greater than or equal to 0",
            id="file-negative",
        ),
    ],
)
def test_a_bad_price_is_refused_naming_its_key(build, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build()
    assert caught.value.key == key


def test_public_masks_credentials_but_keeps_the_shape():
    cfg = AppConfig(
        otlp=OtlpConfig(
            endpoint="http://collector:4318", headers={"authorization": "Bearer tok-4f2a9"}
        ),
        alerts=AlertPolicy(webhook_url="https://hooks.slack.com/services/T0/B0/hook-77e1c"),
    )
    shown = cfg.public("sqlite:///x.db")
    assert shown["database"] == "sqlite:///x.db"
    assert shown["otlp"]["headers"] == {"authorization": "[REDACTED]"}
    assert shown["alerts"]["webhook_url"] == "https://hooks.slack.com/[REDACTED]"
    assert "tok-4f2a9" not in repr(shown) and "hook-77e1c" not in repr(shown)
    assert shown["guards"]["budget"]["usd"] == Decimal(5)


@pytest.mark.parametrize(
    "key", ["max_arg_chars", "max_arg_total_chars", "max_arg_items"], ids=lambda k: k
)
def test_side_effect_argument_limits_must_be_positive(key):
    with pytest.raises(ConfigError) as info:
        parse_config({"humans": {key: 0}})
    assert info.value.key == f"humans.{key}" and "must be >= 1, got 0" in str(info.value)
    assert getattr(parse_config({"humans": {key: 7}}).humans, key) == 7


def test_the_audit_files_default_outside_the_database_directory():
    config = parse_config({})
    assert config.audit.key_file is None and config.audit.checkpoint_file is None
    assert config.audit.checkpoint_every == 1
    given = parse_config({"audit": {"checkpoint_file": "/var/log/c.jsonl", "key_file": "/k"}})
    assert given.audit.checkpoint_file == "/var/log/c.jsonl" and given.audit.key_file == "/k"


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        pytest.param('durable = "yes"', "durable", "'yes'", id="quoted-yes"),
        pytest.param('durable = "false"', "durable", "'false'", id="quoted-false"),
        pytest.param("durable = 0", "durable", "0", id="number"),
        pytest.param('[trace]\nprompts = "on"', "trace.prompts", "'on'", id="trace"),
        pytest.param("[alerts]\nenabled = 1", "alerts.enabled", "1", id="alerts"),
        pytest.param(
            '[guards.cache]\nenabled = "true"', "guards.cache.enabled", "'true'", id="cache"
        ),
    ],
)
def test_booleans_must_be_toml_booleans(tmp_path: Path, text, key, value):
    """`durable = "yes"` was accepted (pydantic's lax bool): it must be `true` or `false`."""
    file = tmp_path / "corral.toml"
    file.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert str(info.value) == (
        f"{key}: must be true or false (a TOML boolean, without quotes), got {value}"
    )


def test_real_booleans_are_read():
    cfg = parse_config({"durable": False, "trace": {"prompts": True}})
    assert cfg.durable is False and cfg.trace.prompts is True


def test_public_masks_userinfo_and_query_values_of_every_url():
    from corral.guards import CachePolicy

    cfg = AppConfig(
        otlp=OtlpConfig(endpoint="https://collector.example:4318/v1/traces?api_key=otlp-9a1"),
        alerts=AlertPolicy(webhook_url="https://bot:hook-pw-3@hooks.example.com/x/hook-5e2"),
        guards=GuardPolicies(
            cache=CachePolicy(enabled=True, backend="redis", redis_url="redis://:rpw-77c1@r:6379/0")
        ),
    )
    shown = cfg.public("postgresql://app:***@db/prod?sslpassword=pg-0b3")
    assert shown["otlp"]["endpoint"] == "https://collector.example:4318/v1/traces?api_key=***"
    assert shown["alerts"]["webhook_url"] == "https://hooks.example.com/[REDACTED]"
    assert shown["guards"]["cache"]["redis_url"] == "redis://***@r:6379/0"
    assert shown["database"] == "postgresql://***@db/prod?sslpassword=***"
    for secret in ("otlp-9a1", "hook-pw-3", "hook-5e2", "rpw-77c1", "pg-0b3", "bot:"):
        assert secret not in repr(shown), secret
