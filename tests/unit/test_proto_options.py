"""The contract generates cleanly in every language: each inferd.v1 proto carries the agreed language options
(Go import path, Java package and classes, C#, Objective-C, PHP, Ruby), the generated Python carries them too
(`make proto` ran), and protos/grpc/health/v1/health.proto is gRPC's health protocol, wire for wire, with the
options upstream publishes — the stubs the Go, Java and C++ clients generate for health checks."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
INFERD_V1 = PROTOS / "inferd" / "v1"
HEALTH = PROTOS / "grpc" / "health" / "v1" / "health.proto"

COMMON_OPTIONS = {
    "csharp_namespace": '"Inferd.V1"',
    "go_package": '"github.com/inferd/inferd/clients/go/inferdv1;inferdv1"',
    "java_multiple_files": "true",
    "java_package": '"dev.inferd.v1"',
    "objc_class_prefix": '"IFD"',
    "php_namespace": '"Inferd\\\\V1"',
    "ruby_package": '"Inferd::V1"',
}
OUTER_CLASSNAMES = {
    "admin.proto": "AdminProto",
    "inference.proto": "InferenceProto",
    "model_config.proto": "ModelConfigProto",
    "tensor.proto": "TensorProto",
}
OPTION = re.compile(r"^option\s+(\w+)\s*=\s*(.+?);\s*$", re.MULTILINE)


def file_options(path: Path) -> dict[str, str]:
    found = OPTION.findall(path.read_text())
    options = dict(found)
    assert len(options) == len(found), f"{path.name}: an option is set twice"
    return options


def test_every_inferd_v1_proto_is_listed_here():
    # a new file must get its options (and its java_outer_classname) too
    assert sorted(p.name for p in INFERD_V1.glob("*.proto")) == sorted(OUTER_CLASSNAMES)


@pytest.mark.parametrize("name", sorted(OUTER_CLASSNAMES))
def test_inferd_v1_proto_sets_the_agreed_language_options(name: str):
    expected = COMMON_OPTIONS | {"java_outer_classname": f'"{OUTER_CLASSNAMES[name]}"'}
    assert file_options(INFERD_V1 / name) == expected


@pytest.mark.parametrize("name", sorted(OUTER_CLASSNAMES))
def test_generated_python_carries_the_options(name: str):
    """`make proto` regenerated the Python code after the options changed (proto-check also diffs it)."""
    module = importlib.import_module(f"inferd.v1.{name.removesuffix('.proto')}_pb2")
    options = module.DESCRIPTOR.GetOptions()
    assert options.go_package == "github.com/inferd/inferd/clients/go/inferdv1;inferdv1"
    assert options.java_package == "dev.inferd.v1" and options.java_multiple_files
    assert options.java_outer_classname == OUTER_CLASSNAMES[name]
    assert options.csharp_namespace == "Inferd.V1" and options.objc_class_prefix == "IFD"
    assert options.php_namespace == "Inferd\\V1" and options.ruby_package == "Inferd::V1"


def test_java_outer_classnames_do_not_clash_with_a_message_service_or_enum():
    # java_multiple_files puts every message in its own class next to the outer class: a clash fails javac
    top_level = set()
    for path in INFERD_V1.glob("*.proto"):
        top_level |= set(re.findall(r"^(?:message|service|enum)\s+(\w+)", path.read_text(), re.MULTILINE))
    assert not top_level & set(OUTER_CLASSNAMES.values())


def test_health_proto_has_options_for_the_clients():
    assert file_options(HEALTH) == {
        "csharp_namespace": '"Grpc.Health.V1"',
        "go_package": '"google.golang.org/grpc/health/grpc_health_v1"',
        "java_multiple_files": "true",
        "java_outer_classname": '"HealthProto"',
        "java_package": '"io.grpc.health.v1"',
        "objc_class_prefix": '"GrpcHealthV1"',
    }


def _compiled(tmp_path: Path, proto: Path) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--descriptor_set_out={out}", str(proto)],
        check=True,
    )
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    (compiled,) = descriptors.file
    return compiled


def test_health_proto_is_grpc_health_v1_wire_for_wire(tmp_path: Path):
    """Same package, messages, fields, numbers, enum values, methods and streaming as grpcio-health-checking's
    (the stubs the Python server serves with); upstream's later List method is left out on purpose."""
    from grpc_health.v1 import health_pb2

    ours = _compiled(tmp_path, HEALTH)
    upstream = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(upstream)
    assert ours.name == "grpc/health/v1/health.proto"  # the Python package's file is grpc_health/v1/...: not wire
    assert ours.package == upstream.package == "grpc.health.v1"
    assert ours.options == upstream.options
    for message in ours.message_type:
        for field in message.field:
            field.ClearField("json_name")
    upstream_messages = {m.name: m for m in upstream.message_type}
    assert [m.name for m in ours.message_type] == ["HealthCheckRequest", "HealthCheckResponse"]
    for message in ours.message_type:
        assert message == upstream_messages[message.name]
    (ours_service,) = ours.service
    (upstream_service,) = upstream.service
    assert ours_service.name == upstream_service.name == "Health"
    upstream_methods = {m.name: m for m in upstream_service.method}
    assert [m.name for m in ours_service.method] == ["Check", "Watch"]
    for method in ours_service.method:
        assert method == upstream_methods[method.name]


def test_buf_lint_skips_the_published_contracts_but_not_inferd():
    config = yaml.safe_load((PROTOS / "buf.yaml").read_text())
    (module,) = config["modules"]
    assert sorted(module["lint"]["ignore"]) == ["grpc", "inference"]
    assert config["breaking"]["use"] == ["FILE"]


def test_no_python_is_generated_for_the_health_proto():
    # the server and SDK use grpcio-health-checking's grpc_health.v1; a second grpc.health.v1 would clash
    assert not (ROOT / "clients" / "python" / "grpc").exists()
    makefile = (ROOT / "Makefile").read_text()
    assert "PROTOS := $(wildcard protos/inferd/v1/*.proto)" in makefile


# --- make proto-breaking: buf breaking against an earlier commit, in a throwaway git repository ---------------

BUF_IN_CHECKOUT = ROOT / ".cache" / "buf" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def buf() -> Path:
    """The real buf binary (`make proto-lint` installs it); skip without it, unless INFERD_REQUIRE_CLIENTS=1."""
    import os
    import shutil

    found = BUF_IN_CHECKOUT if BUF_IN_CHECKOUT.exists() else shutil.which("buf")
    if found is None:
        message = "buf is not installed (make proto-lint installs it into .cache/buf)"
        if os.environ.get("INFERD_REQUIRE_CLIENTS") == "1":
            pytest.fail(f"{message}; INFERD_REQUIRE_CLIENTS=1 requires it")
        pytest.skip(message)
    return Path(found).resolve()


class Repo:
    """A git repository holding a copy of protos/, the Makefile and the check's script."""

    def __init__(self, path: Path, buf: Path) -> None:
        import os

        self.path = path
        self.buf = buf
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "INFERD_", "PROTO_"))} | {
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(path.parent),
        }

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True, check=True)
        return done.stdout

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def edit(self, name: str, old: str, new: str) -> None:
        path = self.path / "protos" / "inferd" / "v1" / name
        text = path.read_text()
        assert text.count(old) == 1, old
        path.write_text(text.replace(old, new))

    def proto_breaking(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", "proto-breaking", f"BUF={self.buf}"],
            cwd=self.path,
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def repo(tmp_path: Path, buf: Path) -> Repo:
    import shutil

    path = tmp_path / "inferd"
    path.mkdir()
    shutil.copytree(PROTOS, path / "protos")
    shutil.copy(ROOT / "Makefile", path / "Makefile")
    (path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "proto_breaking.sh", path / "scripts" / "proto_breaking.sh")
    repo = Repo(path, buf)
    repo.git("init", "-q", "-b", "main")
    repo.commit("the contract as it is")
    return repo


def _out(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_proto_breaking_skips_without_a_previous_commit(repo: Repo):
    done = repo.proto_breaking()
    assert done.returncode == 0, _out(done)
    assert "skipped: no commit 'HEAD~1'" in done.stdout


def test_proto_breaking_passes_an_additive_change(repo: Repo):
    repo.edit(
        "tensor.proto",
        "  repeated bytes bytes_contents = 12;\n",
        "  repeated bytes bytes_contents = 12;\n  repeated int32 added_contents = 99;\n",
    )
    repo.commit("add a field")
    done = repo.proto_breaking()
    assert done.returncode == 0, _out(done)
    assert "against the previous commit" in done.stdout and "no breaking change" in done.stdout


def test_proto_breaking_fails_on_a_renumbered_field_and_names_it(repo: Repo):
    repo.edit("tensor.proto", "  bytes raw_contents = 4;\n", "  bytes raw_contents = 40;\n")
    repo.commit("renumber raw_contents")
    done = repo.proto_breaking()
    assert done.returncode != 0, _out(done)
    assert "inferd/v1/tensor.proto" in done.stdout and '"raw_contents"' in done.stdout
    assert "proto-breaking: FAILED" in done.stdout and "[proto-breaking]" in done.stdout


def test_proto_breaking_fails_on_a_changed_language_option(repo: Repo):
    repo.edit("tensor.proto", 'option java_package = "dev.inferd.v1";', 'option java_package = "dev.inferd.api.v1";')
    repo.commit("move the Java package")
    done = repo.proto_breaking()
    assert done.returncode != 0 and 'File option "java_package" changed' in done.stdout, _out(done)


def test_an_intended_break_passes_with_the_commit_marker_or_the_variable(repo: Repo):
    repo.edit("tensor.proto", "  bytes raw_contents = 4;\n", "  bytes raw_contents = 40;\n")
    repo.commit("renumber raw_contents")
    assert repo.proto_breaking(INFERD_PROTO_BREAKING_OK="1").returncode == 0
    repo.git("commit", "-q", "--amend", "-m", "renumber raw_contents [proto-breaking]\n\nOn purpose: v1 is unreleased.")
    done = repo.proto_breaking()
    assert done.returncode == 0, _out(done)
    assert '"raw_contents"' in done.stdout and "accepted (a commit message since" in done.stdout


def test_proto_breaking_compares_a_branch_against_its_merge_base(repo: Repo, tmp_path: Path):
    """Commits ahead of the upstream are checked together: a break two commits back is not missed."""
    clone = Repo(tmp_path / "clone", repo.buf)
    subprocess.run(["git", "clone", "-q", str(repo.path), str(clone.path)], env=repo.env, check=True)
    clone.edit("tensor.proto", "  bytes raw_contents = 4;\n", "  bytes raw_contents = 40;\n")
    clone.commit("renumber raw_contents")
    clone.edit(
        "tensor.proto",
        "  repeated bytes bytes_contents = 12;\n",
        "  repeated bytes bytes_contents = 12;\n  repeated int32 added_contents = 99;\n",
    )
    clone.commit("add a field")
    done = clone.proto_breaking()
    assert done.returncode != 0, _out(done)
    assert "against the merge-base with origin/main" in done.stdout
    assert clone.proto_breaking(PROTO_AGAINST="HEAD~1").returncode == 0


def test_proto_breaking_skips_in_a_shallow_clone(repo: Repo, tmp_path: Path):
    repo.edit("tensor.proto", "  bytes raw_contents = 4;\n", "  bytes raw_contents = 40;\n")
    repo.commit("renumber raw_contents")
    shallow = Repo(tmp_path / "shallow", repo.buf)
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow.path)], env=repo.env, check=True
    )
    done = shallow.proto_breaking()
    assert done.returncode == 0, _out(done)
    assert "skipped: no commit 'HEAD~1'" in done.stdout and "shallow clone" in done.stdout
