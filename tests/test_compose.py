"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the stack has every
service it promises, every command it runs is a real command of this project, and every PARLEY_
variable it sets is a setting."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli

from parley.cli import main as parley_cli
from parley.config import ENV_PREFIX, Settings
from workers.app import app as celery_app

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"api", "worker", "beat", "postgres", "redis", "minio", "mailpit"}
CELERY_APP_PATH = "workers.app"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _celery_context() -> CLIContext:
    return CLIContext(app=celery_app, no_color=True, workdir=None, quiet=True)


def check_celery_command(name: str, args: list[str]) -> None:
    """`args` parse as Celery's own `name` subcommand (unknown options are an error)."""
    command = celery_cli.commands.get(name)
    assert command is not None, f"celery has no {name!r} command"
    command.make_context(name, list(args), obj=_celery_context())


def check_parley_command(args: list[str]) -> None:
    """`args` name a `parley` command (through its groups) and parse as its arguments."""
    command: click.Command = parley_cli
    path = ["parley"]
    while isinstance(command, click.Group):
        assert args, f"{' '.join(path)} needs a subcommand"
        name, *args = args
        found = command.get_command(click.Context(command), name)
        assert found is not None, f"{' '.join(path)} has no {name!r} command"
        command, path = found, [*path, name]
    if path[1:] in (["worker"], ["beat"]):  # thin wrappers: everything after them is Celery's
        check_celery_command(path[1], args)
    else:
        command.make_context(path[-1], list(args))


def check_project_command(argv: list[str]) -> None:
    program, *args = argv
    if program == "parley":
        check_parley_command(args)
    elif program == "celery":
        if args[:1] in (["-A"], ["--app"]):
            app_path, name, *rest = args[1:]
        else:
            assert args and args[0].startswith("--app="), f"{argv} names no Celery app"
            app_path, name, *rest = args[0].removeprefix("--app="), *args[1:]
        assert app_path == CELERY_APP_PATH, f"{argv} runs another Celery app than {CELERY_APP_PATH}"
        check_celery_command(name, rest)
    else:
        pytest.fail(f"{argv} is neither a parley nor a celery command")


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert SERVICES <= set(services)
    assert {"api", "worker", "beat"} <= set(_app_services(compose))
    assert any("postgres-data:" in v for v in services["postgres"]["volumes"])
    assert "postgres-data" in compose["volumes"]
    # The media bucket is created, by a one-shot service that waits for MinIO to be healthy.
    creators = [s for s in services.values() if "mc mb" in " ".join(_argv(s.get("command", [])))]
    assert creators and creators[0]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "postgres", "redis", "minio", "mailpit"):
        assert "healthcheck" in compose["services"][name], name


def test_the_app_waits_for_its_database_broker_and_schema(compose: dict[str, Any]) -> None:
    for name in ("api", "worker", "beat"):
        depends_on = compose["services"][name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy"
        assert depends_on["redis"]["condition"] == "service_healthy"
        assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_every_command_is_a_real_command_of_this_project(compose: dict[str, Any]) -> None:
    for service in _app_services(compose).values():
        check_project_command(_argv(service["command"]))
        test = service.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD-SHELL" and test[1].startswith(("parley", "celery")):
            check_project_command(shlex.split(test[1].replace("$$", "$")))
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    check_project_command(json.loads(cmd.group(1)))


@pytest.mark.parametrize(
    "argv",
    [["parley", "serve", "--no-such-flag"], ["parley", "sever"], ["parley", "worker", "--concurrency", "x"],
     ["celery", "-A", "workers.app", "wroker"], ["gunicorn", "app"]],
)
def test_the_command_check_rejects_what_is_not_a_command(argv: list[str]) -> None:
    with pytest.raises((click.ClickException, AssertionError, pytest.fail.Exception)):
        check_project_command(argv)


def _parley_variables(compose: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for service in compose["services"].values():
        environment = service.get("environment", {})
        names = environment.keys() if isinstance(environment, dict) else (e.split("=", 1)[0] for e in environment)
        found |= {n for n in names if n.startswith(ENV_PREFIX)}
    dockerfile = (ROOT / "Dockerfile").read_text()
    found |= set(re.findall(rf"\b({ENV_PREFIX}\w+)=", dockerfile))
    return found


def test_every_parley_variable_is_a_setting(compose: dict[str, Any]) -> None:
    variables = _parley_variables(compose)
    assert "PARLEY_BROKER_URL" in variables
    unknown = {v for v in variables if v.removeprefix(ENV_PREFIX).lower() not in Settings.model_fields}
    assert unknown == set()
