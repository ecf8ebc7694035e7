"""The telemetry policies live in the core and validate when built; `corral.observe` re-exports
them under their old names."""

from __future__ import annotations

import pytest

from corral import telemetry
from corral.errors import ConfigError
from corral.observe import policy as old_path


def test_the_adapter_path_names_the_same_classes():
    for name in telemetry.__all__:
        assert getattr(old_path, name) is getattr(telemetry, name)


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: telemetry.TracePolicy(max_chars=10), "trace.max_chars"),
        (lambda: telemetry.OtlpConfig(interval_s=0), "otlp.interval_s"),
        (lambda: telemetry.OtlpConfig(endpoint="localhost:4318"), "otlp.endpoint"),
        (lambda: telemetry.RetentionPolicy(days=0), "retention.days"),
        (lambda: telemetry.AlertPolicy(thresholds={"x.speed": 1.0}), "alerts.thresholds.x.speed"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_its_key(build, key):
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.key == key
