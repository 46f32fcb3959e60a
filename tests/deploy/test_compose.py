"""docker-compose.yml and its CPU override, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import click
import pytest

from cli.main import cli
from shared.queue import QUEUES
from shared.settings import Settings
from tests.deploy.compose_files import (
    INTERPOLATION,
    WHALES_NAME,
    environment,
    field_name,
    is_interpolation,
    load_compose,
    merge,
    settings_variables,
)
from tests.paths import REPO_ROOT

COMPOSE_PATH = REPO_ROOT / "docker-compose.yml"
CPU_PATH = REPO_ROOT / "docker-compose.cpu.yml"
WORKERS = ("worker", "worker-interactive")
OUR_IMAGES = ("whales-api", "whales-worker")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_PATH)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def cpu_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return merge(compose, load_compose(CPU_PATH))["services"]


def _runs_whales(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] in OUR_IMAGES


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(reservations.get("devices") or [])


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check: dict[str, Any] = service.get("healthcheck") or {}
    return not check.get("disable", False) and bool(check.get("test"))


def _healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_the_expected_services_exist(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "redis", "migrate", "api", "worker", "worker-interactive", "flower"}
    assert expected <= set(services)


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    missing = [
        name
        for name, service in services.items()
        if not (service.get("image") or service.get("build"))
    ]
    assert missing == []


def test_third_party_images_are_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert "@sha256:" in image or re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned"


def test_our_images_carry_the_project_version(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    ours = {name: service["image"] for name, service in services.items() if "build" in service}
    assert ours, "no service builds an image"
    for name, image in ours.items():
        assert image.split(":")[0] in OUR_IMAGES, name
        assert image.split(":")[1] == version, f"{name}: {image} is not tagged {version}"


def test_builds_use_the_dockerfile_of_their_image(services: dict[str, dict[str, Any]]) -> None:
    expected = {"whales-api": "Dockerfile.api", "whales-worker": "Dockerfile.worker"}
    for name, service in services.items():
        if "build" not in service:
            continue
        dockerfile = service["build"]["dockerfile"]
        assert dockerfile == expected[service["image"].split(":")[0]], name
        assert (REPO_ROOT / service["build"]["context"] / dockerfile).is_file(), name


def test_postgres_has_a_named_volume_and_a_pg_isready_healthcheck(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert "pg_isready" in _healthcheck_text(postgres)
    volume, _, target = postgres["volumes"][0].partition(":")
    assert volume in compose["volumes"], "the database lives in a named volume"
    # The official image moved its data directory in 18: a volume on the old
    # path would be ignored and the database lost with the container.
    major = int(re.match(r"postgres:(\d+)", postgres["image"]).group(1))  # type: ignore[union-attr]
    assert target == ("/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data")


def test_redis_persists_and_answers_ping(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    # An evicted task message would be a lost image.
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    volume, _, target = redis["volumes"][0].partition(":")
    assert volume in compose["volumes"] and target == "/data"
    check = _healthcheck_text(redis)
    assert "redis-cli" in check and "ping" in check


def test_api_serves_port_8000_and_checks_health(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["command"] == ["whales", "api"]
    assert "8000:8000" in api["ports"]
    env = environment(api)
    assert env["WHALES_API_PORT"] == "8000"
    assert env["WHALES_API_HOST"] == "0.0.0.0"  # reachable from outside its container
    assert "http://127.0.0.1:8000/health" in _healthcheck_text(api)


def test_flower_port_and_basic_auth_come_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    flower = services["flower"]
    assert flower["command"] == ["whales", "flower"]
    assert any(str(port).endswith("5555:5555") for port in flower["ports"])
    env = environment(flower)
    assert env["WHALES_FLOWER_PORT"] == "5555"
    for variable in ("WHALES_FLOWER_USER", "WHALES_FLOWER_PASSWORD"):
        match = INTERPOLATION.fullmatch(env[variable] or "")
        assert match and match.group(1) == variable, f"{variable} must come from the environment"
        assert match.group(2) == ":?", f"{variable}: compose must refuse to start without it"
    assert _has_healthcheck(flower)


def test_migrate_is_a_one_shot_schema_upgrade(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["whales", "db", "upgrade"]
    assert migrate.get("restart") == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_depends_on_conditions_order_the_start(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a list"
        for target, rule in depends_on.items():
            assert target in services, f"{name} depends on unknown {target}"
            if target == "migrate":
                expected = "service_completed_successfully"
            elif _has_healthcheck(services[target]):
                expected = "service_healthy"
            else:
                expected = "service_started"
            assert rule["condition"] == expected, f"{name} -> {target}"


def test_everything_that_uses_the_database_waits_for_the_migrations(
    services: dict[str, dict[str, Any]],
) -> None:
    # Flower also gets the URL (so nothing falls back to an embedded server) but
    # never reads the database: it may start, and help, while migrations fail.
    users = [
        name
        for name, service in services.items()
        if service.get("command", [None, None])[:2] in (["whales", "api"], ["whales", "worker"])
    ]
    assert set(users) == {"api", *WORKERS}
    for name in users:
        assert "WHALES_DATABASE_URL" in environment(services[name])
        assert (
            services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_commands_name_real_whales_commands(services: dict[str, dict[str, Any]]) -> None:
    known = set(cli.list_commands(click.Context(cli)))
    for name, service in services.items():
        command = service.get("command")
        if _runs_whales(service):
            assert command and command[0] == "whales", name
            assert command[1] in known, f"{name}: `whales {command[1]}` does not exist"


def test_workers_consume_every_queue_each_in_its_own_service(
    services: dict[str, dict[str, Any]],
) -> None:
    consumed: dict[str, str] = {}
    for name in WORKERS:
        command = services[name]["command"]
        assert command[:2] == ["whales", "worker"]
        queues = command[command.index("--queues") + 1].split(",")
        assert set(queues) <= set(QUEUES), name
        for queue in queues:
            consumed.setdefault(queue, name)
    assert set(consumed) == set(QUEUES)
    assert consumed["batch"] == "worker" and consumed["interactive"] == "worker-interactive"


def test_workers_reserve_an_nvidia_gpu(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        devices = _gpu_devices(services[name])
        assert any(
            d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
        ), name
        assert environment(services[name])["WHALES_DEVICE"] == "cuda"


def test_workers_on_one_gpu_share_a_priority_scope(services: dict[str, dict[str, Any]]) -> None:
    scopes = {environment(services[name]).get("WHALES_PRIORITY_SCOPE") for name in WORKERS}
    assert len(scopes) == 1 and None not in scopes


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    for name in WORKERS:
        service = services[name]
        assert "container_name" not in service, f"{name}: a fixed name allows one replica"
        assert not service.get("ports"), f"{name}: a fixed host port allows one replica"
    assert all("container_name" not in service for service in services.values())


def test_shared_volumes_hold_data_and_models(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        if not _runs_whales(service):
            continue
        env = environment(service)
        mounts = {target: (volume, mode) for volume, target, mode in _mounts(service)}
        if name in ("api", *WORKERS):
            assert mounts[str(env["WHALES_DATA_DIR"])] == ("data", "rw"), name
        if name in WORKERS:
            assert mounts[str(env["WHALES_MODEL_DIR"])] == ("models", "ro"), (
                f"{name}: models read-only"
            )
    assert {"data", "models"} <= set(compose["volumes"])


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    mounts = []
    for entry in service.get("volumes", []):
        volume, target, *mode = entry.split(":")
        mounts.append((volume, target, mode[0] if mode else "rw"))
    return mounts


def test_the_models_tool_writes_the_models_volume(services: dict[str, dict[str, Any]]) -> None:
    models = services["models"]
    assert models["command"] == ["whales", "models", "pull"]
    assert "tools" in models["profiles"], "a tool, not a service `up` starts"
    assert ("models", environment(models)["WHALES_MODEL_DIR"], "rw") in _mounts(models)


def test_whales_services_read_the_env_file(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if _runs_whales(service):
            assert ".env" in service["env_file"], name


def test_every_whales_variable_is_a_setting() -> None:
    known = settings_variables()
    for path in (COMPOSE_PATH, CPU_PATH):
        unknown = set(WHALES_NAME.findall(path.read_text())) - known
        assert not unknown, f"{path.name} names variables the settings do not have: {unknown}"


def test_literal_settings_in_compose_are_valid(
    services: dict[str, dict[str, Any]], cpu_services: dict[str, dict[str, Any]]
) -> None:
    checked = set()
    for service in [*services.values(), *cpu_services.values()]:
        values = {
            field_name(variable): value
            for variable, value in environment(service).items()
            if variable.startswith("WHALES_") and value is not None and "${" not in value
        }
        Settings.model_validate(values)  # raises on a value the service would refuse at start
        checked |= set(values)
    assert {"device", "data_dir", "model_dir", "api_port", "flower_port"} <= checked


def test_no_secret_is_written_in_compose(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert value and is_interpolation(value), (
                    f"{name}: {variable} is written in the file"
                )
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value or ""):
                assert is_interpolation(password), f"{name}: {variable} has a password in its URL"
        assert "WHALES_FAULT_CRASH_SHA256" not in environment(service), (
            "fault injection in production"
        )


def test_required_variables_are_in_the_env_example() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    names_in_example = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    required = {
        match.group(1)
        for path in (COMPOSE_PATH, CPU_PATH)
        for match in INTERPOLATION.finditer(path.read_text())
        if match.group(2) == ":?"
    }
    assert required, "compose requires no variable: where do the secrets come from?"
    assert required <= names_in_example


def test_cpu_variant_drops_the_gpu_and_keeps_the_rest(
    services: dict[str, dict[str, Any]], cpu_services: dict[str, dict[str, Any]]
) -> None:
    assert set(cpu_services) == set(services)
    for name, service in cpu_services.items():
        assert _gpu_devices(service) == [], f"{name} still reserves a GPU"
    for name in WORKERS:
        assert environment(cpu_services[name])["WHALES_DEVICE"] == "cpu"
        assert cpu_services[name]["command"] == services[name]["command"]
        assert cpu_services[name]["depends_on"] == services[name]["depends_on"]
        assert cpu_services[name]["volumes"] == services[name]["volumes"]
