"""CI (.ci/run) installs the Debian packages the clients build with (only the missing ones, with apt-get's
update-and-retry), checks the contract with buf lint and buf breaking, builds every example client, and runs
the tests with INFERD_REQUIRE_CLIENTS=1 so a missing toolchain fails instead of skipping."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".ci" / "run"
MAKEFILE = ROOT / "Makefile"

# the agreed list (clients/*/README.md), the Java example's jars, plus prometheus as before
REQUIRED_PACKAGES = {
    "prometheus",
    "golang-go",
    "golang-google-grpc-dev",
    "golang-github-golang-protobuf-1-5-dev",
    "golang-google-protobuf-dev",
    "libgrpc++-dev",
    "protobuf-compiler-grpc",
    "protobuf-compiler",
    "libprotobuf-dev",
    "libgrpc-java",
    "protobuf-compiler-grpc-java-plugin",
    "libperfmark-java",
    "libgeronimo-annotation-1.3-spec-java",
    "libprotobuf-java",
    "libguava-java",  # the Java example's compile and run classpath (Makefile JAVA_COMPILE_JARS, JAVA_RUN_JARS)
    "libnetty-java",
    "nginx",
}


def ci_text() -> str:
    return CI.read_text()


def test_ci_script_parses():
    subprocess.run(["bash", "-n", str(CI)], check=True)


def test_steps_run_in_order_with_clients_required_before_they_build():
    text = ci_text()
    steps = re.findall(r'^step "([^"]+)" (.+)$', text, re.MULTILINE)
    names = [name for name, _ in steps]
    assert names == [
        "system packages",
        "venv",
        "lint",
        "typecheck",
        "proto-check",
        "proto-lint",
        "proto-breaking",
        "clients",
        "test",
    ]
    commands = dict(steps)
    assert commands["proto-breaking"] == "make proto-breaking"
    assert commands["clients"] == "make clients"
    assert text.index("export INFERD_REQUIRE_CLIENTS=1") < text.index('step "clients"')
    # every step's time is printed
    assert 'echo "==> ${name}: ok in ${took}s"' in text


def _packages() -> set[str]:
    block = re.search(r"^DEBIAN_PACKAGES=\((.*?)^\)", ci_text(), re.MULTILINE | re.DOTALL)
    assert block is not None
    return set(block.group(1).split())


def test_ci_installs_the_agreed_debian_packages():
    assert _packages() >= REQUIRED_PACKAGES


def _system_packages_function() -> str:
    text = ci_text()
    start = text.index("DEBIAN_PACKAGES=(")
    end = text.index("\n}\n", text.index("system_packages() {")) + 3
    return text[start:end]


@pytest.fixture
def fake_system(tmp_path: Path) -> Path:
    """dpkg-query says installed except for $MISSING; apt-get logs its arguments and fails the first install
    when $APT_FAIL_FIRST=1 (stale package lists); the build commands exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text(
        '#!/bin/bash\nfor p in $MISSING; do [ "$p" = "${!#}" ] && { echo -n not-installed; exit 0; }; done\n'
        "echo -n installed\n"
    )
    (bin_dir / "apt-get").write_text(
        '#!/bin/bash\necho "$*" >> "$LOG"\n'
        'if [ "$1" = install ] && [ "${APT_FAIL_FIRST:-}" = 1 ] && [ ! -e "$LOG.updated" ]; then exit 100; fi\n'
        '[ "$1" = update ] && : > "$LOG.updated"\nexit 0\n'
    )
    for command in ("javac", "g++", "make", "pkg-config"):
        (bin_dir / command).write_text("#!/bin/bash\nexit 0\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    return bin_dir


def _run_system_packages(fake_system: Path, tmp_path: Path, **env: str) -> tuple[str, list[str]]:
    log = tmp_path / "apt.log"
    script = _system_packages_function() + "\nsystem_packages\n"
    done = subprocess.run(
        ["/bin/bash", "-c", script],
        env={"PATH": str(fake_system), "LOG": str(log)} | env,  # only the fakes: no real apt-get, javac...
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout, log.read_text().splitlines() if log.exists() else []


def test_nothing_is_installed_when_every_package_is_there(fake_system: Path, tmp_path: Path):
    out, apt = _run_system_packages(fake_system, tmp_path)
    assert apt == [] and "are installed" in out


def test_only_the_missing_packages_are_installed(fake_system: Path, tmp_path: Path):
    _, apt = _run_system_packages(fake_system, tmp_path, MISSING="libgrpc-java nginx")
    assert apt == ["install -y -q --no-install-recommends libgrpc-java nginx"]


def test_a_failed_install_updates_the_package_lists_and_retries(fake_system: Path, tmp_path: Path):
    (fake_system / "javac").unlink()
    _, apt = _run_system_packages(fake_system, tmp_path, MISSING="golang-go", APT_FAIL_FIRST="1")
    assert apt == [
        "install -y -q --no-install-recommends golang-go default-jdk-headless",
        "update -q",
        "install -y -q --no-install-recommends golang-go default-jdk-headless",
    ]


def _make_dry_run(*targets: str) -> str:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *targets], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def test_make_clients_builds_every_language():
    rule = re.search(r"^clients:(.*?)(?:##|$)", MAKEFILE.read_text(), re.MULTILINE)
    assert rule is not None
    assert rule.group(1).split() == ["clients-go", "clients-java", "clients-cpp", "clients-node"]
    assert "cd clients/node && npm ci" in _make_dry_run("clients-node")


def test_make_proto_breaking_runs_the_script_with_the_checkouts_buf():
    assert "scripts/proto_breaking.sh" in _make_dry_run("-W", ".cache/buf/node_modules/.bin/buf", "proto-breaking")
