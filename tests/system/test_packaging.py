"""The project as a package: installed into a fresh virtualenv with the ``server`` extra,
it serves and its commands work from any folder; installed without it, the runner and the
smoke test work with their own few requirements and none of the service's; its
requirements cover its imports; an old Python is refused in one line by every entry point
and by make."""
from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
import time
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import requests

from app.python_version import require_supported_python
from bench.servers import RUNNER
from tests.support import ROOT, free_port, stop_process

OLD_VERSION = "3.10.13"
# What the service needs and a machine that only runs tasks must not get.
SERVICE_PACKAGES = {"flask", "werkzeug", "marshmallow", "apispec", "gunicorn", "numpy", "orjson",
                    "prometheus-client", "filelock", "psycopg", "psycopg-pool"}
# What a source tree holds that a package build must not see or write into.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "logs", "__pycache__", ".pytest_cache",
                                    ".hypothesis", "build", "dist", "*.egg-info")


def requirement_name(line: str) -> str:
    """The normalized project name of a requirement line: ``psycopg[binary]>=3.2`` -> psycopg."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", line).group()).lower()


def requirement_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would let a child import the project's own tree."""
    env = {name: value for name, value in os.environ.items()
           if name not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return {**env, **extra}


def setup_requirements(section: str, key: str) -> list[str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    return setup[section][key].split()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project, so that a build writes nothing into the working tree."""
    path = tmp_path_factory.mktemp("source") / "agent-metrics-service"
    shutil.copytree(ROOT, path, ignore=NOT_SOURCE)
    return path


def install(tmp_path_factory: pytest.TempPathFactory, target: str) -> Path:
    """A fresh virtualenv with ``target`` installed by pip."""
    path = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    subprocess.run([path / "bin" / "python", "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", target],
                   check=True, timeout=900, env=clean_env(), stdin=subprocess.DEVNULL)
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    """The project installed with the ``server`` extra: the service and the runner."""
    return install(tmp_path_factory, f"{source}[server]")


@pytest.fixture(scope="module")
def runner_venv(tmp_path_factory: pytest.TempPathFactory, source: Path) -> Path:
    """The project installed without extras: what a machine that only runs tasks gets."""
    return install(tmp_path_factory, str(source))


def installed_distributions(venv: Path) -> set[str]:
    """The normalized names of the distributions installed in the virtualenv."""
    shown = subprocess.run(
        [venv / "bin" / "python", "-c",
         "from importlib.metadata import distributions\n"
         "for dist in distributions(): print(dist.metadata['Name'])"],
        env=clean_env(), capture_output=True, text=True, timeout=60, check=True)
    return {requirement_name(name) for name in shown.stdout.split()}


def serve_installed(venv: Path, folder: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    """gunicorn from the virtualenv, serving its ``app`` from an empty folder with the
    project's gunicorn.conf.py copied beside it: (base URL, process)."""
    shutil.copy(ROOT / "gunicorn.conf.py", folder / "gunicorn.conf.py")
    (folder / "empty").mkdir()
    port = free_port()
    with open(folder / "gunicorn.out", "wb") as out:
        process = subprocess.Popen(
            [venv / "bin" / "gunicorn", "--config", str(folder / "gunicorn.conf.py"),
             "--chdir", str(folder / "empty"), "app:create_app()"],
            cwd=folder / "empty", env={**env, "AGENT_BIND": f"127.0.0.1:{port}"},
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError((folder / "gunicorn.out").read_text())
        try:
            requests.get(f"{base_url}/api/health", timeout=1)
            return base_url, process
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    stop_process(process, grace_seconds=15)
    raise AssertionError("gunicorn did not start in 60 s")


def assert_runner_starts(venv: Path, folder: Path) -> None:
    """``agent-runner --help`` from the virtualenv, run in an unrelated folder."""
    shown = subprocess.run([venv / "bin" / "agent-runner", "--help"], cwd=folder,
                           env=clean_env(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: agent-runner")


def smoke_env(folder: Path) -> dict[str, str]:
    """The environment of a server and a runner using the example routing, their files in
    ``folder``."""
    routing = folder / "routing.json"
    shutil.copy(ROOT / "scripts" / "routing.example.json", routing)
    return clean_env(AGENT_ROUTING_FILE=str(routing), AGENT_LOGS_DIR=str(folder / "logs"),
                     AGENT_RUNNER_DIR=str(folder / "runner"), AGENT_FSYNC="0")


def run_smoke(venv: Path, folder: Path, env: dict[str, str],
              base_url: str) -> subprocess.CompletedProcess[str]:
    """``agent-smoke`` from the virtualenv against the server at ``base_url``."""
    return subprocess.run([venv / "bin" / "agent-smoke"], cwd=folder / "empty",
                          env={**env, "AGENT_API_BASE": base_url}, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_installed_package_serves_and_passes_the_smoke_check(venv: Path, tmp_path: Path):
    where = subprocess.run([venv / "bin" / "python", "-c", "import app; print(app.__file__)"],
                           cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    assert_runner_starts(venv, tmp_path)

    env = smoke_env(tmp_path)
    base_url, server = serve_installed(venv, tmp_path, env)
    try:
        dashboard = requests.get(f"{base_url}/dashboard", timeout=30)
        smoke = run_smoke(venv, tmp_path, env, base_url)
    finally:
        stop_process(server, grace_seconds=15)
    assert dashboard.status_code == 200 and "<html" in dashboard.text  # the template shipped
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    lines = smoke.stdout.splitlines()
    assert lines[-1] == "smoke: all checks passed"
    assert len([line for line in lines if line.startswith("PASS ")]) == 11
    assert (tmp_path / "runner" / "agent_runner.log").exists()
    assert (tmp_path / "logs").is_dir()


def test_the_installed_package_without_extras_runs_tasks_without_the_service(
        venv: Path, runner_venv: Path, tmp_path: Path):
    """The runner and the smoke test from an install without extras, against a server
    from an install with the ``server`` extra."""
    installed = installed_distributions(runner_venv)
    assert {"agent-metrics-service", "requests", "urllib3"} <= installed
    assert not installed & SERVICE_PACKAGES
    required = {requirement_name(line) for line in requirement_lines(ROOT / "requirements.txt")}
    assert required <= installed_distributions(venv)
    assert_runner_starts(runner_venv, tmp_path)

    env = smoke_env(tmp_path)
    base_url, server = serve_installed(venv, tmp_path, env)
    try:
        smoke = run_smoke(runner_venv, tmp_path, env, base_url)
    finally:
        stop_process(server, grace_seconds=15)
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert smoke.stdout.splitlines()[-1] == "smoke: all checks passed"


def test_requirements_txt_is_the_runner_then_the_server_extra():
    installed = (setup_requirements("options", "install_requires")
                 + setup_requirements("options.extras_require", "server"))
    assert installed == requirement_lines(ROOT / "requirements.txt")


def test_requirements_dev_builds_on_requirements():
    dev = requirement_lines(ROOT / "requirements-dev.txt")
    assert dev[0] == "-r requirements.txt"
    runtime = {requirement_name(line) for line in requirement_lines(ROOT / "requirements.txt")}
    assert not runtime & {requirement_name(line) for line in dev[1:]}


def third_party_imports(paths: list[Path]) -> set[str]:
    """Top-level module names imported by these files, besides the standard library's
    and the project's own."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"app", "__future__"}


def test_every_import_of_the_service_and_scripts_is_a_runtime_requirement():
    required = {requirement_name(line) for line in requirement_lines(ROOT / "requirements.txt")}
    distributions = packages_distributions()
    sources = [*(ROOT / "app").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]
    missing = {module: distributions.get(module) for module in third_party_imports(sources)
               if not {requirement_name(name) for name in distributions.get(module, [])}
               & required}
    assert not missing


@pytest.mark.parametrize("version", [(3, 10, 13), (3, 9), (2, 7, 18)])
def test_the_version_check_refuses_an_older_python(version):
    with pytest.raises(SystemExit) as refused:
        require_supported_python(version)
    [line] = str(refused.value).splitlines()
    shown = ".".join(map(str, version))
    assert "needs Python 3.11 or newer" in line and line.endswith(f"is Python {shown}")


@pytest.mark.parametrize("version", [(3, 11, 0), (3, 13, 1), (4, 0)])
def test_the_version_check_accepts_3_11_and_newer(version):
    require_supported_python(version)


@pytest.fixture
def old_python(tmp_path: Path) -> Path:
    """This interpreter, except that ``sys.version_info`` says 3.10."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.version_info = ({OLD_VERSION.replace('.', ', ')}, 'final', 0)\n")
    fake = tmp_path / "python3.10"
    fake.write_text(f'#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} "$@"\n')
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("argv", [
    ["-c", "from app import create_app"],
    [str(RUNNER), "--once"],
    ["-m", "app.smoke"],
    ["-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
], ids=["app", "runner", "smoke", "gunicorn"])
def test_an_old_python_is_refused_in_one_line(old_python: Path, argv: list[str]):
    result = subprocess.run([old_python, *argv], cwd=ROOT, env=clean_env(AGENT_BIND=(
        f"127.0.0.1:{free_port()}")), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line == (f"agent-metrics-service needs Python 3.11 or newer; {sys.executable} is "
                    f"Python {OLD_VERSION}")


@pytest.mark.parametrize("goal", ["run", "test"])
def test_make_stops_with_one_line_for_an_old_python(old_python: Path, goal: str):
    env = {name: value for name, value in clean_env().items()
           if name not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}}
    result = subprocess.run(["make", "--no-print-directory", f"PYTHON={old_python}", goal],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    [line] = (result.stdout + result.stderr).splitlines()
    assert f"{old_python} is Python {OLD_VERSION}, but Python 3.11+ is needed" in line
    assert f"make PYTHON=python3.12 {goal}" in line
