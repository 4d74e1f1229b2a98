"""The deployment files agree with the code: compose services, their variables, the image."""

from __future__ import annotations

import yaml

from app.config import Settings
from tests.paths import PROJECT_ROOT


def load_compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def test_compose_has_every_service_with_healthchecks() -> None:
    services = load_compose()["services"]
    assert {"postgres", "redis", "migrate", "server", "worker", "inference"} <= services.keys()
    for name in ("postgres", "redis", "server", "worker", "inference"):
        assert "healthcheck" in services[name], name
    assert services["server"]["command"] == ["loraboard", "serve"]
    assert services["worker"]["command"] == ["python", "-m", "worker", "training"]
    assert services["inference"]["command"] == ["python", "-m", "worker", "inference"]


def test_compose_workers_get_an_nvidia_gpu() -> None:
    services = load_compose()["services"]
    for name in ("worker", "inference"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_variables_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    for name, service in load_compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("LORABOARD_"):
                assert variable.removeprefix("LORABOARD_").lower() in fields, f"{name}: {variable}"


def test_compose_server_and_workers_share_data_and_backends() -> None:
    services = load_compose()["services"]
    for name in ("server", "worker", "inference"):
        env = services[name]["environment"]
        assert env["LORABOARD_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["LORABOARD_BROKER_URL"].startswith("redis://")
        assert "loraboard-data:/data" in services[name]["volumes"]
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_installs_torch_before_the_project() -> None:
    lines = (PROJECT_ROOT / "Dockerfile").read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if 'pip install "torch==' in line)
    project_line = next(i for i, line in enumerate(lines) if line.strip() == "RUN pip install .")
    assert torch_line < project_line


def test_dockerfile_keeps_compiled_kernels_on_the_data_volume() -> None:
    text = (PROJECT_ROOT / "Dockerfile").read_text()
    assert 'VOLUME ["/data"]' in text
    for variable in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert f"{variable}=/data/cache/" in text, variable


def test_dockerfile_keeps_the_hugging_face_cache_on_the_data_volume() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert "HF_HOME=/data/huggingface" in dockerfile


def test_compose_server_health_check_sends_the_servers_own_key() -> None:
    server = load_compose()["services"]["server"]
    kind, command = server["healthcheck"]["test"]
    # /healthz needs a key like every route; $$ leaves the expansion to the container's shell.
    assert kind == "CMD-SHELL"
    assert '-H "Authorization: Bearer $$LORABOARD_API_KEY"' in command
    assert command.endswith("http://127.0.0.1:8000/healthz")
    # Without a key the check could never pass: compose refuses to start instead.
    assert server["environment"]["LORABOARD_API_KEY"].startswith("${LORABOARD_API_KEY:?")
