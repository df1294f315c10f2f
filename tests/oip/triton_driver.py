"""Drive an inferd server with Triton's own client, ``tritonclient[grpc]``, and print what it saw as JSON.

Run by the tritonclient venv's interpreter (tests/e2e/tritonclient_venv.py), never by the project's: the two
cannot share a process (protobuf versions, and both register the protobuf package ``inference``).

    python tests/oip/triton_driver.py SPEC.json   →   one JSON object on stdout

SPEC: ``{"url": "127.0.0.1:PORT", "client": "sync" | "aio", "scenario": NAME, ...scenario arguments}``.
Tensors travel in tensors_json's encoding. A call that fails is reported as ``{"error": {"status", "message"}}``
in its place, so the tests assert on what the server answered rather than on a crash of this script.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tensors_json import decode, encode
from tritonclient.utils import InferenceServerException

#: how long a scenario waits for streamed or callback answers before reporting what it has
ANSWER_TIMEOUT_S = 60.0


def error_of(err: InferenceServerException) -> dict[str, Any]:
    return {"error": {"status": str(err.status() or ""), "message": err.message() or ""}}


def parameter_value(parameter: Any) -> Any:
    which = parameter.WhichOneof("parameter_choice")
    return None if which is None else getattr(parameter, which)


def result_json(result: Any) -> dict[str, Any]:
    """One InferResult: the response's id, model, version, parameters, and each output via ``as_numpy``."""
    response = result.get_response()
    outputs = {}
    for output in response.outputs:
        array = result.as_numpy(output.name)
        outputs[output.name] = encode(np.asarray(array))
    return {
        "request_id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "raw": len(response.raw_output_contents) > 0,
        "datatypes": {output.name: output.datatype for output in response.outputs},
        "parameters": {key: parameter_value(value) for key, value in response.parameters.items()},
        "outputs": outputs,
    }


def build_inputs(case: dict[str, Any]) -> list[Any]:
    inputs = []
    for spec in case["inputs"]:
        array = decode(spec["tensor"])
        tensor = grpcclient.InferInput(spec["name"], list(array.shape), spec["tensor"]["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def call_arguments(case: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments shared by infer, async_infer, async_stream_infer and the aio stream's dicts."""
    arguments: dict[str, Any] = {
        "model_name": case["model"],
        "inputs": build_inputs(case),
        "model_version": case.get("version", ""),
        "request_id": case.get("id", ""),
    }
    if case.get("outputs") is not None:
        arguments["outputs"] = [grpcclient.InferRequestedOutput(name) for name in case["outputs"]]
    for key in ("parameters", "priority", "timeout"):
        if case.get(key) is not None:
            arguments[key] = case[key]
    return arguments


def guarded(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except InferenceServerException as err:
        return error_of(err)


async def guarded_async(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except InferenceServerException as err:
        return error_of(err)


# -- scenarios, sync client ------------------------------------------------------------------------


def sync_health(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "server_live": guarded(client.is_server_live),
        "server_ready": guarded(client.is_server_ready),
        "model_ready": {name: guarded(lambda n=name: client.is_model_ready(n)) for name in spec["models"]},
    }


def sync_server_metadata(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": guarded(lambda: client.get_server_metadata(as_json=True))}


def sync_model_metadata(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "models": {
            name: guarded(lambda n=name: client.get_model_metadata(n, spec.get("version", ""), as_json=True))
            for name in spec["models"]
        }
    }


def sync_model_config(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "models": {
            name: guarded(lambda n=name: client.get_model_config(n, spec.get("version", ""), as_json=True))
            for name in spec["models"]
        }
    }


def sync_statistics(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "models": {
            name: guarded(lambda n=name: client.get_inference_statistics(n, as_json=True)) for name in spec["models"]
        }
    }


def sync_infer(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    results = []
    for case in spec["cases"]:
        outcome = guarded(lambda c=case: client.infer(**call_arguments(c)))
        results.append(outcome if isinstance(outcome, dict) else result_json(outcome))
    return {"results": results}


def sync_async_infer(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Every case at once through ``async_infer`` (the callback API), then wait for every callback."""
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for index, case in enumerate(spec["cases"]):

        def callback(result: Any, error: Any, index: int = index) -> None:
            answers.put((index, result, error))

        client.async_infer(callback=callback, **call_arguments(case))
    results: list[Any] = [None] * len(spec["cases"])
    end = time.monotonic() + ANSWER_TIMEOUT_S
    for _ in spec["cases"]:
        try:
            index, result, error = answers.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            break
        results[index] = error_of(error) if error is not None else result_json(result)
    return {"results": results}


def is_final(answer: dict[str, Any]) -> bool:
    """An answer ends its request unless it says ``triton_final_response: false`` (an error ends it too)."""
    return "error" in answer or answer["parameters"].get("triton_final_response", True) is not False


def sync_stream(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """One stream: every case sent with ``async_stream_infer`` before any answer is awaited; answers (and errors,
    which tritonclient reports without the request's id) in arrival order, until each request had its last."""
    answers: queue.Queue[dict[str, Any]] = queue.Queue()

    def callback(result: Any, error: Any) -> None:
        answers.put(error_of(error) if error is not None else result_json(result))

    client.start_stream(callback=callback)
    try:
        for case in spec["cases"]:
            client.async_stream_infer(**call_arguments(case))
        arrived = collect(lambda timeout: answers.get(timeout=timeout), len(spec["cases"]))
    finally:
        client.stop_stream(cancel_requests=True)
    return {"answers": arrived}


def collect(next_answer: Callable[[float], dict[str, Any]], requests: int) -> list[dict[str, Any]]:
    arrived: list[dict[str, Any]] = []
    finished = 0
    end = time.monotonic() + ANSWER_TIMEOUT_S
    while finished < requests:
        try:
            answer = next_answer(max(0.0, end - time.monotonic()))
        except queue.Empty:
            break
        arrived.append(answer)
        finished += is_final(answer)
    return arrived


def sync_load_unload(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Unload, observe, load, observe: each step's answer in order."""
    name = spec["model"]
    steps: list[tuple[str, Any]] = [
        ("ready_before", guarded(lambda: client.is_model_ready(name))),
        ("unload", guarded(lambda: client.unload_model(name))),
        ("ready_after_unload", guarded(lambda: client.is_model_ready(name))),
        ("index_after_unload", guarded(lambda: client.get_model_repository_index(as_json=True))),
        ("load", guarded(lambda: client.load_model(name))),
        ("ready_after_load", guarded(lambda: client.is_model_ready(name))),
        ("index_after_load", guarded(lambda: client.get_model_repository_index(as_json=True))),
    ]
    return {"steps": dict(steps)}


SYNC: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "health": sync_health,
    "server_metadata": sync_server_metadata,
    "model_metadata": sync_model_metadata,
    "model_config": sync_model_config,
    "statistics": sync_statistics,
    "infer": sync_infer,
    "async_infer": sync_async_infer,
    "stream": sync_stream,
    "load_unload": sync_load_unload,
}


# -- scenarios, asyncio client ---------------------------------------------------------------------


async def aio_health(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    ready = {}
    for name in spec["models"]:
        ready[name] = await guarded_async(lambda n=name: client.is_model_ready(n))
    return {
        "server_live": await guarded_async(client.is_server_live),
        "server_ready": await guarded_async(client.is_server_ready),
        "model_ready": ready,
    }


async def aio_server_metadata(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": await guarded_async(lambda: client.get_server_metadata(as_json=True))}


async def aio_model_metadata(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for name in spec["models"]:
        models[name] = await guarded_async(
            lambda n=name: client.get_model_metadata(n, spec.get("version", ""), as_json=True)
        )
    return {"models": models}


async def aio_model_config(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for name in spec["models"]:
        models[name] = await guarded_async(
            lambda n=name: client.get_model_config(n, spec.get("version", ""), as_json=True)
        )
    return {"models": models}


async def aio_statistics(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    models = {}
    for name in spec["models"]:
        models[name] = await guarded_async(lambda n=name: client.get_inference_statistics(n, as_json=True))
    return {"models": models}


async def aio_infer(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Every case concurrently (``asyncio.gather`` of ``infer``)."""

    async def one(case: dict[str, Any]) -> dict[str, Any]:
        outcome = await guarded_async(lambda: client.infer(**call_arguments(case)))
        return outcome if isinstance(outcome, dict) else result_json(outcome)

    return {"results": list(await asyncio.gather(*(one(case) for case in spec["cases"])))}


async def aio_stream(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """One ``stream_infer`` call fed every case by an async generator, answers read in arrival order."""

    async def requests() -> Any:
        for case in spec["cases"]:
            yield call_arguments(case)

    answers = client.stream_infer(requests())
    arrived: list[dict[str, Any]] = []
    finished = 0

    async def read() -> None:
        nonlocal finished
        async for result, error in answers:
            answer = error_of(error) if error is not None else result_json(result)
            arrived.append(answer)
            finished += is_final(answer)
            if finished >= len(spec["cases"]):
                return

    try:
        await asyncio.wait_for(read(), ANSWER_TIMEOUT_S)
    except asyncio.TimeoutError:
        pass
    finally:
        answers.cancel()
    return {"answers": arrived}


async def aio_load_unload(client: Any, spec: dict[str, Any]) -> dict[str, Any]:
    name = spec["model"]
    steps = {"ready_before": await guarded_async(lambda: client.is_model_ready(name))}
    steps["unload"] = await guarded_async(lambda: client.unload_model(name))
    steps["ready_after_unload"] = await guarded_async(lambda: client.is_model_ready(name))
    steps["index_after_unload"] = await guarded_async(lambda: client.get_model_repository_index(as_json=True))
    steps["load"] = await guarded_async(lambda: client.load_model(name))
    steps["ready_after_load"] = await guarded_async(lambda: client.is_model_ready(name))
    steps["index_after_load"] = await guarded_async(lambda: client.get_model_repository_index(as_json=True))
    return {"steps": steps}


AIO: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "health": aio_health,
    "server_metadata": aio_server_metadata,
    "model_metadata": aio_model_metadata,
    "model_config": aio_model_config,
    "statistics": aio_statistics,
    "infer": aio_infer,
    "stream": aio_stream,
    "load_unload": aio_load_unload,
}


async def run_aio(spec: dict[str, Any]) -> dict[str, Any]:
    async with aioclient.InferenceServerClient(spec["url"]) as client:
        return await AIO[spec["scenario"]](client, spec)


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    if spec.get("client", "sync") == "aio":
        out = asyncio.run(run_aio(spec))
    else:
        with grpcclient.InferenceServerClient(spec["url"]) as client:
            out = SYNC[spec["scenario"]](client, spec)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
