from __future__ import annotations

from pathlib import Path

from app.config import Settings


def test_defaults_need_no_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'loraboard.db'}"
    assert settings.resolved_broker_url == f"sqla+sqlite:///{tmp_path.resolve() / 'broker.db'}"
    assert settings.resolved_result_backend_url.startswith("db+sqlite:///")
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_redis_broker_also_carries_results(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3")
    assert settings.resolved_result_backend_url == "redis://127.0.0.1:6379/3"


def test_environment_prefix(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LORABOARD_PORT", "9123")
    monkeypatch.setenv("LORABOARD_DATABASE_URL", "postgresql+psycopg://u@h/db")
    settings = Settings(data_dir=tmp_path)
    assert settings.port == 9123
    assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"
