"""The commands the README (and clients/grpcurl/README.md, docs/*.md) tell people to run, run for real.

Every line that starts with ``grpcurl`` in a ```sh block is run against a subprocess server with
``127.0.0.1:8001`` replaced by its real address; so are the ``inferd`` lines and the Python SDK
snippet. Predict answers are checked for the output shapes the README promises.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.server_process import REPO_ROOT, ServerProcess, tool_env

pytestmark = pytest.mark.e2e

README_ADDRESS = "127.0.0.1:8001"
#: the metrics endpoint in the docs (`inferd serve`'s default --metrics-port)
METRICS_ADDRESS = "127.0.0.1:8002"
DOCUMENTS = (
    REPO_ROOT / "README.md",
    REPO_ROOT / "clients" / "grpcurl" / "README.md",
    # recipes build their own repository and run in their own flow (tests/e2e/test_pytorch_recipe.py); so does
    # security.md, whose quick start makes certificates and a token and serves TLS with an auth config: its block
    # runs whole, as a script (tests/e2e/test_security_walkthrough.py)
    *sorted(
        p for p in (REPO_ROOT / "docs").glob("*.md") if not p.name.startswith("recipe-") and p.name != "security.md"
    ),
)
COMMAND_TIMEOUT_S = 120

#: model -> (output name, output dims after the batch dimension), as the README's table states.
EXPECTED_OUTPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "mlp_ranker": ("score", (1,)),
    "text_encoder": ("logits", (8,)),
    "tabular_torch": ("probabilities", (4,)),
    "tokenizer": ("input_ids", (128,)),
}

_FENCE = re.compile(r"^```(\w*)\s*$")


def fenced_lines(path: Path, language: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line inside ```<language> blocks of a Markdown file."""
    inside = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if fence:
            inside = not inside and fence.group(1) == language
            continue
        if inside:
            yield number, line


def fenced_blocks(path: Path, language: str) -> list[str]:
    blocks: list[list[str]] = []
    previous = -1
    for number, line in fenced_lines(path, language):
        if number != previous + 1:
            blocks.append([])
        blocks[-1].append(line)
        previous = number
    return ["\n".join(block) for block in blocks]


def commands(prefix: str) -> list[Any]:
    """pytest params, one per ```sh line starting with ``prefix``, with ids like README.md:42."""
    found = []
    for path in DOCUMENTS:
        for number, line in fenced_lines(path, "sh"):
            stripped = line.strip()
            if stripped.startswith(prefix):
                found.append(pytest.param(stripped, id=f"{path.relative_to(REPO_ROOT)}:{number}"))
    return found


GRPCURL_LINES = commands("grpcurl ")
CLI_LINES = [p for p in commands("inferd ") if not p.values[0].startswith("inferd serve") or "--help" in p.values[0]]
CURL_LINES = commands("curl ")


def test_the_readmes_have_grpcurl_commands_to_test() -> None:
    assert len(GRPCURL_LINES) >= 10
    joined = "\n".join(p.values[0] for p in GRPCURL_LINES)
    for needed in (
        "/Predict",
        "/PredictStream",
        "/ListModels",
        "grpc.health.v1.Health/Check",
        " list",
        "describe",
    ):
        assert needed in joined
    assert all("\\" not in p.values[0] for p in GRPCURL_LINES), "grpcurl commands must be single lines"


def run_shell(line: str, server: ServerProcess, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    """Run one documented command with the real addresses, as a person would in a shell."""
    line = line.replace(README_ADDRESS, server.address).replace(METRICS_ADDRESS, f"127.0.0.1:{server.metrics_port}")
    return subprocess.run(
        ["bash", "-c", line],
        cwd=cwd,
        env=tool_env(INFERD_ADDRESS=server.address),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def json_documents(text: str) -> list[Any]:
    """grpcurl prints one JSON document per message; a stream prints several in a row."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


def request_of(line: str) -> dict[str, Any]:
    """The JSON request a grpcurl line sends: the -d argument, or the file after '<' for -d @."""
    tokens = shlex.split(line)
    data = tokens[tokens.index("-d") + 1]
    if data == "@":
        data = (REPO_ROOT / tokens[tokens.index("<") + 1]).read_text()
    request: dict[str, Any] = json.loads(data)
    return request


def output_rows(output: dict[str, Any], tail: tuple[int, ...]) -> int:
    """Check one output tensor's shape against the expected non-batch dims and its element count."""
    shape = tuple(int(d) for d in output["shape"])
    assert shape[1:] == tail, f"output {output['name']} has shape {list(shape)}, expected [N, {tail}]"
    count = int(np.prod(shape))
    # With -emit-defaults every *_contents field is present; exactly one may hold the values.
    filled = [key for key, value in output.items() if key.endswith("_contents") and value]
    if count:
        assert len(filled) == 1, f"output {output['name']} carries its values in {filled}"
        if filled[0] != "raw_contents":
            assert len(output[filled[0]]) == count
    return shape[0]


def check_predict(request: dict[str, Any], reply: dict[str, Any]) -> int:
    model = request["model_name"]
    name, tail = EXPECTED_OUTPUTS[model]
    assert reply["model_name"] == model
    assert int(reply["model_version"]) >= 1
    outputs = {o["name"]: o for o in reply["outputs"]}
    assert name in outputs, f"{model} answered {sorted(outputs)}, expected {name}"
    return output_rows(outputs[name], tail)


def check_grpcurl_output(line: str, stdout: str) -> None:
    documents = json_documents(stdout) if stdout.lstrip().startswith("{") else []
    if line.endswith("/Predict") or "/Predict <" in line:
        request = request_of(line)
        (reply,) = documents
        rows = int(request["inputs"][0]["shape"][0])
        assert check_predict(request, reply) == rows
        if request.get("id"):
            assert reply["id"] == request["id"]
    elif "/PredictStream" in line:
        request = request_of(line)
        rows = int(request["inputs"][0]["shape"][0])
        chunk = int(request.get("chunk_rows", 0)) or rows
        seen = [check_predict(request, message) for message in documents]
        assert sum(seen) == rows and max(seen) <= chunk
        assert [int(m.get("sequence_index", 0)) for m in documents] == list(range(len(documents)))
        assert [bool(m.get("final", False)) for m in documents] == [False] * (len(documents) - 1) + [True]
    elif "grpc.health.v1.Health/Check" in line:
        assert documents == [{"status": "SERVING"}]
    elif line.endswith("inference.GRPCInferenceService/ModelInfer") or "/ModelInfer <" in line:
        request = request_of(line)
        (reply,) = documents
        model = request["model_name"]
        name, tail = EXPECTED_OUTPUTS[model]
        assert reply["model_name"] == model and int(reply["model_version"]) >= 1
        outputs = {o["name"]: o for o in reply["outputs"]}
        shape = tuple(int(d) for d in outputs[name]["shape"])
        assert shape == (int(request["inputs"][0]["shape"][0]), *tail), f"{model} answered {name} {list(shape)}"
        if request.get("id"):
            assert reply["id"] == request["id"]
    elif line.endswith(("inference.GRPCInferenceService/ServerReady", "inference.GRPCInferenceService/ModelReady")):
        assert documents == [{"ready": True}]
    elif line.endswith("/ListModels"):
        (reply,) = documents
        states = {m["name"]: [v["state"] for v in m["versions"]] for m in reply["models"]}
        assert {name: ["VERSION_STATE_READY"] for name in EXPECTED_OUTPUTS}.items() <= states.items()


@pytest.mark.parametrize("line", GRPCURL_LINES)
def test_documented_grpcurl_command_succeeds(line: str, inferd_server: ServerProcess, grpcurl: str) -> None:
    result = run_shell(line, inferd_server)
    assert result.returncode == 0, f"{line}\nexit {result.returncode}\n{result.stderr}{result.stdout[-2000:]}"
    check_grpcurl_output(line, result.stdout)


def test_grpcurl_list_shows_inference_health_and_reflection_services(
    inferd_server: ServerProcess, grpcurl: str
) -> None:
    result = subprocess.run(
        [grpcurl, "-plaintext", inferd_server.address, "list"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {
        "inferd.v1.InferenceService",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_grpcurl_describes_the_service_through_reflection_without_proto_files(
    inferd_server: ServerProcess, grpcurl: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [grpcurl, "-plaintext", inferd_server.address, "describe", "inferd.v1.InferenceService"],
        cwd=tmp_path,  # no protos/ anywhere near: everything comes from the server
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for rpc in ("Predict", "PredictStream", "ModelMetadata", "ListModels", "ServerMetadata"):
        assert f"rpc {rpc} (" in result.stdout


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_grpcurl_typed_predict_on_tabular_torch_equals_the_torchscript_model_in_process(
    inferd_server: ServerProcess, grpcurl: str, example_repository: Path
) -> None:
    torch = pytest.importorskip("torch")
    features = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    request = {
        "model_name": "tabular_torch",
        "inputs": [
            {
                "name": "features",
                "data_type": "DATA_TYPE_FP32",
                "shape": list(features.shape),
                "fp32_contents": features.ravel().tolist(),
            }
        ],
    }
    result = subprocess.run(
        [grpcurl, "-plaintext", "-d", "@", inferd_server.address, "inferd.v1.InferenceService/Predict"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (output,) = json.loads(result.stdout)["outputs"]
    assert output["name"] == "probabilities" and output["data_type"] == "DATA_TYPE_FP32"
    served = np.asarray(output["fp32_contents"], dtype=np.float32).reshape([int(d) for d in output["shape"]])

    module = torch.jit.load(str(example_repository / "tabular_torch" / "1" / "model.pt"))
    module.eval()
    with torch.inference_mode():
        expected = module(torch.from_numpy(features)).numpy()
    assert served.shape == expected.shape == (3, 4)
    # JSON carries float32 with ~8 significant digits, so equal up to that rounding.
    np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def cli_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where the README's `python -c` set-up lines (e.g. writing features.npy) have run."""
    workdir = tmp_path_factory.mktemp("readme-cli")
    for param in commands("python "):
        line = param.values[0].replace("python ", shlex.quote(sys.executable) + " ", 1)
        subprocess.run(["bash", "-c", line], cwd=workdir, env=tool_env(), check=True, timeout=COMMAND_TIMEOUT_S)
    return workdir


@pytest.mark.parametrize("line", CLI_LINES)
def test_documented_inferd_command_succeeds(
    line: str, inferd_server: ServerProcess, inferd_command: str, cli_workdir: Path
) -> None:
    result = run_shell(line, inferd_server, cwd=cli_workdir)
    assert result.returncode == 0, f"{line}\nexit {result.returncode}\n{result.stderr}{result.stdout[-2000:]}"
    if line.startswith("inferd predict"):
        reply = json.loads(result.stdout)
        model = line.split()[2]
        name, tail = EXPECTED_OUTPUTS[model]
        assert reply["model"] == model and reply["version"] >= 1
        assert tuple(reply["outputs"][name]["shape"][1:]) == tail
    elif line.startswith("inferd health"):
        assert result.stdout.strip() == "SERVING"
    elif line == "inferd models":
        for model in EXPECTED_OUTPUTS:
            assert re.search(rf"^{model}\s+1\s+READY\b", result.stdout, re.MULTILINE), result.stdout


def test_readme_python_sdk_snippet_runs(inferd_server: ServerProcess) -> None:
    (snippet,) = fenced_blocks(REPO_ROOT / "README.md", "python")
    result = subprocess.run(
        [sys.executable, "-c", snippet.replace(README_ADDRESS, inferd_server.address)],
        cwd=REPO_ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "(2, 1)"
    assert "(2, 8)" in lines
    assert "SERVING SERVING" in lines
    assert any(line.startswith("StatusCode.NOT_FOUND") for line in lines)
    assert any(line.startswith("INVALID_ARGUMENT: input 'features' of model 'mlp_ranker'") for line in lines)


def test_the_docs_show_how_to_read_the_metrics_endpoint() -> None:
    assert any("/metrics" in p.values[0] for p in CURL_LINES)


@pytest.mark.parametrize("line", CURL_LINES)
def test_documented_curl_command_succeeds(line: str, inferd_server: ServerProcess) -> None:
    assert inferd_server.metrics_port, "the e2e server serves metrics on a free port"
    result = run_shell(line, inferd_server)
    assert result.returncode == 0, f"{line}\nexit {result.returncode}\n{result.stderr}{result.stdout[-2000:]}"
    assert result.stdout.strip(), f"{line} printed nothing"
