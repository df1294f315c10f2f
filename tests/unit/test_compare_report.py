"""``inferd compare``'s report from ModelStatus and ModelStatistics replies: who is champion, traffic
shares as the server routes, and a verdict per challenger (canary or shadow)."""

from __future__ import annotations

from inferd.v1 import inference_pb2, model_config_pb2
from server.cli.compare import report, shadow_version, traffic_shares

READY = inference_pb2.VERSION_STATE_READY


def status(labels: dict[int, list[str]], traffic: dict[str, int] | None = None, shadow: str = "") -> object:
    message = inference_pb2.ModelStatus(
        name="m",
        versions=[inference_pb2.VersionStatus(version=v, state=READY, labels=ls) for v, ls in labels.items()],
        traffic=[model_config_pb2.TrafficWeight(label=k, weight=w) for k, w in (traffic or {}).items()],
    )
    if shadow:
        message.shadow.CopyFrom(model_config_pb2.ShadowPolicy(label=shadow, fraction=0.5))
    return message


def stats(version: int, correct: int, scored: int) -> inference_pb2.VersionStatistics:
    s = inference_pb2.VersionStatistics(name="m", version=version)
    s.feedback.kind, s.feedback.scored, s.feedback.correct = "classification", scored, correct
    return s


def test_traffic_shares_follow_the_server_routing() -> None:
    assert traffic_shares(status({1: ["stable"], 2: ["canary"]}, {"stable": 9, "canary": 1})) == {1: 0.9, 2: 0.1}
    assert traffic_shares(status({1: ["stable"], 2: []})) == {1: 1.0}  # stable when READY
    assert traffic_shares(status({1: [], 3: []})) == {3: 1.0}  # else the highest READY version
    assert shadow_version(status({1: ["stable"], 2: ["cand"]}, shadow="cand")) == 2
    assert shadow_version(status({1: ["stable"]})) is None


def test_a_canary_is_compared_with_the_heaviest_label() -> None:
    data = report(
        status({1: ["stable"], 2: ["canary"], 3: []}, {"stable": 9, "canary": 1}),
        [stats(1, 800, 1000), stats(2, 900, 1000), inference_pb2.VersionStatistics(name="m", version=3)],
        0.05,
    )
    assert data["champion"] == 1
    assert [(v["version"], v["role"]) for v in data["versions"]] == [(1, "champion"), (2, "challenger"), (3, "idle")]
    (verdict,) = data["verdicts"]
    assert verdict["challenger"] == 2 and verdict["ahead"] == 2 and verdict["significant"]
    assert data["versions"][2]["score"] is None  # no feedback policy on v3
