"""Acceptance of the Open Inference Protocol v2 (issue 13): Triton's own client, ``tritonclient[grpc]`` from PyPI,
drives a real ``inferd serve`` — sync and asyncio clients — and every answer is compared with what the inferd SDK
gets over inferd.v1 for the same inputs.

tritonclient runs in its own venv and process (tests/e2e/tritonclient_venv.py, tests/oip/triton_driver.py); this
side writes the requests, starts the driver, and asserts on the JSON it prints. The server serves a copy of the
example repository plus probe models whose answers say which engine call (batch) ran them; two of them are held by
the INFERD_TEST_HOLD_UNTIL_QUEUED hook until a known number of requests wait, so "in flight together" and "in one
batch" are facts the answers and the statistics show, not timing.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferd import Client
from inferd.predictions import prompt_inputs
from server.models.test_hooks import HOLD_UNTIL_QUEUED_ENV
from tests.e2e import tritonclient_venv
from tests.e2e.server_process import ServerProcess
from tests.oip.harness import (
    Case,
    assert_same_outputs,
    driver_command,
    driver_spec,
    finish,
    outputs_of,
    probe_config,
    run_driver,
    write_spec,
)
from tests.oip.tensors_json import decode
from tests.support import PROBE_MODEL

pytestmark = pytest.mark.e2e
#: the tritonclient venv's interpreter (a session fixture, made on first use)
tritonclient_python = tritonclient_venv.tritonclient_python

#: held until 64 wait: 64 requests on one stream either are all in flight at once or never answered
STREAM_PROBE, STREAM_IN_FLIGHT = "oip_stream_probe", 64
#: held until 8 wait: 4 from tritonclient + 4 from the SDK can only be answered as one batch of 8
MIXED_PROBE, MIXED_EACH = "oip_mixed_probe", 4
#: no batching: the model the load/unload and requested-outputs tests use
CONTROL_PROBE = "oip_control_probe"
CLIENTS = ["sync", "aio"]


@pytest.fixture(scope="module")
def oip_repository(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oip-models")
    shutil.copytree(example_repository, root, dirs_exist_ok=True)
    for name, max_batch, batching in (
        (STREAM_PROBE, STREAM_IN_FLIGHT, True),
        (MIXED_PROBE, 2 * MIXED_EACH, True),
        (CONTROL_PROBE, 8, False),
    ):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(probe_config(name, max_batch, batching))
        (root / name / "1" / "model.py").write_text(PROBE_MODEL)
    return root


@pytest.fixture(scope="module")
def oip_server(oip_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(HOLD_UNTIL_QUEUED_ENV, f"{STREAM_PROBE}={STREAM_IN_FLIGHT},{MIXED_PROBE}={2 * MIXED_EACH}")
        server = ServerProcess(oip_repository, tmp_path_factory.mktemp("oip-server"))
    server.wait_ready()
    yield server
    assert server.terminate() == 0, server.log()[-4000:]


@pytest.fixture(scope="module")
def sdk(oip_server: ServerProcess) -> Iterator[Client]:
    with Client(oip_server.address, timeout=60) as client:
        yield client


@pytest.fixture
def drive(oip_server: ServerProcess, tritonclient_python: Path, tmp_path: Path) -> Any:
    """``drive(scenario, client, **arguments)`` → the driver's JSON; a failure shows the server's log tail."""

    def run(scenario: str, client: str = "sync", **arguments: Any) -> dict[str, Any]:
        spec = driver_spec(oip_server.address, scenario, client, **arguments)
        try:
            return run_driver(tritonclient_python, spec, tmp_path)
        except (AssertionError, subprocess.TimeoutExpired) as err:
            raise AssertionError(f"{err}\n--- server log ---\n{oip_server.log()[-3000:]}") from err

    return run


def example_models(repository: Path) -> list[str]:
    return sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists() and p.name != "tiny_lm")


def inference_cases(repository: Path, rng: np.random.Generator, tag: str = "") -> list[Case]:
    """One request per example model (FP32 raw, INT64, BYTES) plus requested outputs; tiny_lm answers only streams."""
    present = set(example_models(repository))
    cases = [
        Case(f"mlp{tag}", "mlp_ranker", {"features": rng.standard_normal((3, 256), dtype=np.float32)}),
        Case(f"mlp-score{tag}", "mlp_ranker", {"features": rng.standard_normal((1, 256), dtype=np.float32)}, ["score"]),
        Case(f"enc{tag}", "text_encoder", {"input_ids": rng.integers(0, 1024, (2, 128), dtype=np.int64)}, version="1"),
        Case(f"tok{tag}", "tokenizer", {"text": np.array([b"hello world", "caf\u00e9".encode(), b""], dtype=object)}),
        Case(f"probe-y{tag}", CONTROL_PROBE, {"x": rng.standard_normal((2, 4), dtype=np.float32)}, ["y"]),
    ]
    if "tabular_torch" in present:
        cases.append(Case(f"torch{tag}", "tabular_torch", {"features": rng.standard_normal((4, 16), dtype=np.float32)}))
    return cases


def v1_answer(sdk: Client, case: Case) -> dict[str, np.ndarray]:
    version = int(case.version) if case.version else None
    return sdk.predict(case.model, case.inputs, version=version, outputs=case.outputs)


def assert_answers_equal_v1(sdk: Client, cases: list[Case], answers: list[dict[str, Any]]) -> None:
    by_id = {answer.get("request_id"): answer for answer in answers if "error" not in answer}
    errors = [answer["error"] for answer in answers if "error" in answer]
    assert not errors, f"tritonclient got errors: {errors}"
    for case in cases:
        assert case.id in by_id, f"no answer with id '{case.id}' (ids: {sorted(by_id)})"
        answer = by_id[case.id]
        assert answer["model_name"] == case.model and answer["model_version"] == "1", answer
        assert answer["raw"], f"{case.id}: raw inputs were answered with typed outputs (Triton answers raw)"
        assert_same_outputs(outputs_of(answer), v1_answer(sdk, case), case.id)


# -- health and metadata ------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_tritonclient_sees_the_server_and_every_model_live_and_ready(drive: Any, oip_repository: Path, client: str):
    models = [*example_models(oip_repository), "tiny_lm"]
    seen = drive("health", client, models=[*models, "no_such_model"])
    assert seen["server_live"] is True and seen["server_ready"] is True, seen
    assert seen["model_ready"] == {**dict.fromkeys(models, True), "no_such_model": False}


@pytest.mark.parametrize("client", CLIENTS)
def test_server_metadata_names_inferd_and_its_version(drive: Any, sdk: Client, client: str):
    metadata = drive("server_metadata", client)["metadata"]
    v1 = sdk.server_metadata()
    assert metadata["name"] == v1.name and metadata["version"] == v1.version, metadata
    assert isinstance(metadata.get("extensions", []), list)


@pytest.mark.parametrize("client", CLIENTS)
def test_model_metadata_is_the_inferd_signature(drive: Any, sdk: Client, oip_repository: Path, client: str):
    models = [*example_models(oip_repository), "tiny_lm"]
    seen = drive("model_metadata", client, models=models)["models"]
    for name in models:
        metadata, v1 = seen[name], sdk.metadata(name)
        assert "error" not in metadata, f"{name}: {metadata}"
        assert metadata["name"] == name and metadata["versions"] == ["1"], metadata
        for kind in ("inputs", "outputs"):
            expected = [
                {"name": t.name, "datatype": dtype_name(t.data_type), "shape": [str(d) for d in t.shape]}
                for t in getattr(v1, kind)
            ]
            assert metadata[kind] == expected, f"{name} {kind}: {metadata[kind]} over OIP, {expected} over inferd.v1"


def dtype_name(data_type: int) -> str:
    from inferd.v1 import tensor_pb2

    return tensor_pb2.DataType.Name(data_type).removeprefix("DATA_TYPE_")


@pytest.mark.parametrize("client", CLIENTS)
def test_model_config_speaks_tritons_format(drive: Any, sdk: Client, oip_repository: Path, client: str):
    """Triton's conventions: with max_batch_size > 0 the config's dims leave out the batch dimension (a batched
    vector's dims are then empty); BYTES is TYPE_STRING; a generative model is decoupled."""
    models = [*example_models(oip_repository), "tiny_lm"]
    seen = drive("model_config", client, models=models)["models"]
    for name in models:
        assert "error" not in seen[name], f"{name}: {seen[name]}"
        config, v1 = seen[name]["config"], sdk.metadata(name)
        assert config["name"] == name and int(config.get("max_batch_size", 0)) == v1.max_batch_size, config
        batched = v1.max_batch_size > 0
        for kind, key in (("inputs", "input"), ("outputs", "output")):
            expected = [
                {"name": t.name, "data_type": config_type(t.data_type), "dims": dims(t.shape, batched)}
                for t in getattr(v1, kind)
            ]
            got = [
                {"name": tensor["name"], "data_type": tensor["data_type"], "dims": tensor.get("dims", [])}
                for tensor in config[key]
            ]
            assert got == expected, f"{name} {key}: {got} over OIP, {expected} from inferd.v1"
    assert "dynamic_batching" in seen["mlp_ranker"]["config"], seen["mlp_ranker"]["config"]
    decoupled = seen["tiny_lm"]["config"].get("model_transaction_policy", {}).get("decoupled")
    assert decoupled is True, f"tiny_lm (generative) must be decoupled: {seen['tiny_lm']['config']}"


def config_type(data_type: int) -> str:
    """Triton's ModelConfig names BYTES ``TYPE_STRING``; every other type is ``TYPE_`` + the OIP datatype."""
    name = dtype_name(data_type)
    return "TYPE_STRING" if name == "BYTES" else f"TYPE_{name}"


def dims(shape: Any, batched: bool) -> list[str]:
    return [str(d) for d in (list(shape)[1:] if batched else list(shape))]


# -- inference ------------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_infer_on_every_example_model_equals_the_inferd_v1_answer(
    drive: Any, sdk: Client, oip_repository: Path, client: str
):
    cases = inference_cases(oip_repository, np.random.default_rng(13))
    results = drive("infer", client, cases=cases)["results"]
    assert_answers_equal_v1(sdk, cases, results)
    requested = {r["request_id"]: sorted(r["outputs"]) for r in results}
    assert requested["mlp-score"] == ["score"] and requested["probe-y"] == ["y"], requested


def test_async_infer_callbacks_answer_every_request(drive: Any, sdk: Client, oip_repository: Path):
    rng = np.random.default_rng(7)
    cases = [case for round in range(3) for case in inference_cases(oip_repository, rng, tag=f"-{round}")]
    results = drive("async_infer", "sync", cases=cases)["results"]
    assert None not in results, f"{results.count(None)} of {len(cases)} callbacks never came"
    assert_answers_equal_v1(sdk, cases, results)


def test_infer_on_the_generative_model_says_to_stream(drive: Any):
    case = Case("gen", "tiny_lm", prompt_inputs("Once", "prompt"))
    [result] = drive("infer", "sync", cases=[case])["results"]
    assert "error" in result, f"ModelInfer on a decoupled model answered: {result}"
    assert "INTERNAL" not in result["error"]["status"] and "UNKNOWN" not in result["error"]["status"], result
    assert "ModelStreamInfer" in result["error"]["message"], result


@pytest.mark.parametrize("client", CLIENTS)
def test_infer_errors_are_clear_statuses(drive: Any, client: str):
    features = {"features": np.zeros((1, 256), dtype=np.float32)}
    cases = [
        Case("unknown-model", "no_such_model", features),
        Case("bad-version", "mlp_ranker", features, version="latest"),
        Case("bad-shape", "mlp_ranker", {"features": np.zeros((1, 255), dtype=np.float32)}),
        Case("bad-output", "mlp_ranker", features, outputs=["nope"]),
    ]
    results = drive("infer", client, cases=cases)["results"]
    statuses = {case.id: result.get("error", {}).get("status") for case, result in zip(cases, results, strict=True)}
    assert statuses == {
        "unknown-model": "StatusCode.NOT_FOUND",
        "bad-version": "StatusCode.INVALID_ARGUMENT",
        "bad-shape": "StatusCode.INVALID_ARGUMENT",
        "bad-output": "StatusCode.INVALID_ARGUMENT",
    }, results
    assert "features" in results[2]["error"]["message"] and "nope" in results[3]["error"]["message"], results


# -- ModelStreamInfer -----------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_carries_64_requests_in_flight_all_answered_by_id(drive: Any, client: str):
    """The probe's queue opens only once 64 requests wait: every answer coming back proves all 64 were in flight
    on the one stream at once, and each carrying batch_rows 64 and the same call id proves they joined the
    dynamic batcher together."""
    cases = [Case(f"r{i}", STREAM_PROBE, {"x": np.full((1, 4), i, dtype=np.float32)}) for i in range(STREAM_IN_FLIGHT)]
    answers = drive("stream", client, cases=cases)["answers"]
    errors = [a["error"] for a in answers if "error" in a]
    assert not errors and len(answers) == STREAM_IN_FLIGHT, f"{len(answers)} answers, errors: {errors}"
    by_id = {a["request_id"]: outputs_of(a) for a in answers}
    assert sorted(by_id) == sorted(c.id for c in cases), sorted(by_id)
    for case in cases:
        np.testing.assert_array_equal(by_id[case.id]["y"], case.inputs["x"] * 2, err_msg=case.id)
    assert {int(out["batch_rows"][0, 0]) for out in by_id.values()} == {STREAM_IN_FLIGHT}
    assert len({int(out["call"][0, 0]) for out in by_id.values()}) == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_stream_answers_equal_the_inferd_v1_answers(drive: Any, sdk: Client, oip_repository: Path, client: str):
    rng = np.random.default_rng(11)
    cases = [case for round in range(4) for case in inference_cases(oip_repository, rng, tag=f"-{round}")]
    answers = drive("stream", client, cases=cases)["answers"]
    assert len(answers) == len(cases), answers
    for answer in answers:
        assert answer.get("parameters", {}).get("triton_final_response", True) is True, answer
    assert_answers_equal_v1(sdk, cases, answers)


@pytest.mark.parametrize("client", CLIENTS)
def test_generative_model_streams_its_tokens_in_order_with_the_final_flag_last(drive: Any, sdk: Client, client: str):
    """Two prompts on one stream; each one's tokens (concatenated in arrival order) equal inferd.v1's for the same
    greedy request, with triton_final_response false on every response but its last."""
    generation = {"max_tokens": 8, "temperature": 0.0}
    prompts = {"a": "Once upon a time", "b": "The cat"}
    cases = [
        Case(key, "tiny_lm", prompt_inputs(prompt, "prompt"), parameters=generation) for key, prompt in prompts.items()
    ]
    answers = drive("stream", client, cases=cases)["answers"]
    assert not [a for a in answers if "error" in a], answers
    for case in cases:
        mine = [a for a in answers if a["request_id"] == case.id]
        flags = [a["parameters"].get("triton_final_response") for a in mine]
        assert len(mine) >= 2 and flags == [False] * (len(mine) - 1) + [True], f"{case.id}: flags {flags}"
        tokens = [decode(a["outputs"]["token_ids"]) for a in mine if "token_ids" in a["outputs"]]
        texts = [decode(a["outputs"]["text"]) for a in mine if "text" in a["outputs"]]
        chunks = list(sdk.predict_stream("tiny_lm", case.inputs, parameters=generation))
        v1_tokens = np.concatenate([c.outputs["token_ids"].reshape(-1) for c in chunks if "token_ids" in c.outputs])
        v1_text = b"".join(bytes(t) for c in chunks if "text" in c.outputs for t in c.outputs["text"].reshape(-1))
        np.testing.assert_array_equal(np.concatenate([t.reshape(-1) for t in tokens]), v1_tokens, err_msg=case.id)
        assert b"".join(bytes(t) for arr in texts for t in arr.reshape(-1)) == v1_text, case.id


@pytest.mark.parametrize("client", CLIENTS)
def test_an_error_on_one_streamed_request_leaves_the_others_answered(drive: Any, sdk: Client, client: str):
    rng = np.random.default_rng(5)
    good = [
        Case(f"ok{i}", "mlp_ranker", {"features": rng.standard_normal((1, 256), dtype=np.float32)}) for i in range(8)
    ]
    bad_shape = Case("bad-shape", "mlp_ranker", {"features": np.zeros((1, 255), dtype=np.float32)})
    unknown = Case("unknown", "no_such_model", {"features": np.zeros((1, 256), dtype=np.float32)})
    cases = [*good[:3], bad_shape, *good[3:6], unknown, *good[6:]]
    answers = drive("stream", client, cases=cases)["answers"]
    errors = sorted(a["error"]["message"] for a in answers if "error" in a)
    assert len(errors) == 2, f"expected 2 errors in the stream, got {errors}"
    assert any("features" in message for message in errors), errors
    assert any("no_such_model" in message for message in errors), errors
    assert_answers_equal_v1(sdk, good, [a for a in answers if "error" not in a])


# -- statistics, model control, sharing batches --------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_inference_statistics_are_the_inferd_counters(drive: Any, sdk: Client, client: str):
    cases = [Case(f"s{i}", CONTROL_PROBE, {"x": np.ones((i + 1, 4), dtype=np.float32)}) for i in range(3)]
    drive("infer", client, cases=[*cases, Case("fail", CONTROL_PROBE, {"x": np.ones((1, 5), dtype=np.float32)})])
    stats = drive("statistics", client, models=[CONTROL_PROBE])["models"][CONTROL_PROBE]
    [v1] = sdk.statistics(CONTROL_PROBE)
    [model] = stats["model_stats"]
    assert model["name"] == CONTROL_PROBE and model["version"] == "1", model
    infer = model["inference_stats"]
    assert int(infer["success"]["count"]) == v1.success_count >= 3, (model, v1)
    assert int(infer["fail"]["count"]) == sum(v1.failure_count.values()) >= 1, (model, v1)
    assert int(model["inference_count"]) == v1.inference_count and int(model["execution_count"]) == v1.execution_count
    assert int(infer["success"]["ns"]) > 0 and int(infer["compute_infer"]["ns"]) > 0, infer
    batch_sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in model.get("batch_stats", [])}
    assert batch_sizes == {b.batch_size: b.count for b in v1.batch_sizes}, (batch_sizes, v1.batch_sizes)


@pytest.mark.parametrize("client", CLIENTS)
def test_load_model_and_unload_model_control_the_version(drive: Any, sdk: Client, client: str):
    steps = drive("load_unload", client, model=CONTROL_PROBE)["steps"]
    assert steps["ready_before"] is True, steps
    assert steps["unload"] is None and steps["ready_after_unload"] is False, steps
    index = {m["name"]: m for m in steps["index_after_unload"].get("models", [])}
    assert index[CONTROL_PROBE].get("state") != "READY", index
    assert steps["load"] is None and steps["ready_after_load"] is True, steps
    index = {m["name"]: m for m in steps["index_after_load"]["models"]}
    assert index[CONTROL_PROBE]["state"] == "READY" and index[CONTROL_PROBE]["version"] == "1", index
    assert sdk.predict(CONTROL_PROBE, {"x": np.ones((1, 4), dtype=np.float32)})["y"].tolist() == [[2.0] * 4]


def test_tritonclient_and_sdk_callers_share_batches(
    oip_server: ServerProcess, tritonclient_python: Path, sdk: Client, drive: Any, tmp_path: Path
):
    """4 requests from tritonclient (async_infer) and 4 from the SDK, at once, to a model held until 8 wait: neither
    caller alone can open it, so answers at all prove one shared batch; both protocols' statistics say so too."""
    rng = np.random.default_rng(3)
    oip_cases = [
        Case(f"oip{i}", MIXED_PROBE, {"x": rng.standard_normal((1, 4), dtype=np.float32)}) for i in range(MIXED_EACH)
    ]
    v1_inputs = [{"x": rng.standard_normal((1, 4), dtype=np.float32)} for _ in range(MIXED_EACH)]
    spec = write_spec(driver_spec(oip_server.address, "async_infer", cases=oip_cases), tmp_path / "mixed")
    driver = subprocess.Popen(
        driver_command(tritonclient_python, spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with ThreadPoolExecutor(MIXED_EACH) as pool:
            v1_answers = list(pool.map(lambda inputs: sdk.predict(MIXED_PROBE, inputs), v1_inputs))
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    oip_answers = [outputs_of(r) for r in finish((driver.returncode, out, err), "async_infer")["results"]]
    for case, answer in zip(oip_cases, oip_answers, strict=True):
        np.testing.assert_array_equal(answer["y"], case.inputs["x"] * 2, err_msg=case.id)
    for inputs, answer in zip(v1_inputs, v1_answers, strict=True):
        np.testing.assert_array_equal(answer["y"], inputs["x"] * 2)
    for answers in (oip_answers, v1_answers):
        assert all(int(a["batch_rows"][0, 0]) == 2 * MIXED_EACH for a in answers), answers
    assert len({int(a["call"][0, 0]) for a in [*oip_answers, *v1_answers]}) == 1, "two engine calls"
    [v1] = sdk.statistics(MIXED_PROBE)
    assert v1.success_count == 2 * MIXED_EACH and v1.execution_count == 1, v1
    assert {b.batch_size: b.count for b in v1.batch_sizes} == {2 * MIXED_EACH: 1}, v1.batch_sizes
    [oip] = drive("statistics", models=[MIXED_PROBE])["models"][MIXED_PROBE]["model_stats"]
    assert (int(oip["inference_count"]), int(oip["execution_count"])) == (2 * MIXED_EACH, 1), oip
    assert [(int(b["batch_size"]), int(b["compute_infer"]["count"])) for b in oip["batch_stats"]] == [(8, 1)], oip
