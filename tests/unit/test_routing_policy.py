"""Which config.pbtxt edits only re-route (applied over the loaded versions) and which need a reload."""

from __future__ import annotations

from server.models.config import ModelSpec, parse_config_text, spec_from_proto
from server.models.routing_policy import only_routing_differs
from tests.support import SCALE_CONFIG

LABELS = 'version_labels { key: "stable" value: 1 }\nversion_labels { key: "canary" value: 2 }\n'


def spec(extra: str) -> ModelSpec:
    return spec_from_proto(parse_config_text(SCALE_CONFIG + extra, "config.pbtxt"), "config.pbtxt", model_name="m")


def test_labels_traffic_and_shadow_are_routing_policy():
    before = spec(LABELS)
    after = spec(
        'version_labels { key: "stable" value: 2 }\nversion_labels { key: "canary" value: 1 }\n'
        'traffic { label: "stable" weight: 9 }\ntraffic { label: "canary" weight: 1 }\n'
        "shadow { version: 1 fraction: 0.5 }\n"
    )
    assert before != after and only_routing_differs(before, after)
    assert only_routing_differs(before, spec(LABELS))


def test_any_other_field_is_not():
    before = spec(LABELS)
    for extra in ('parameters { key: "k" value: "v" }\n', "dynamic_batching { }\n", "instance_count: 2\n"):
        assert not only_routing_differs(before, spec(LABELS + extra)), extra
    assert not only_routing_differs(None, before)
