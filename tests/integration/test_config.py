"""Configuration: database URL priority, the Secrets Manager path (moto), clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dev.stack.loopback import free_port
from dev.stack.secrets_extension import SecretsExtension
from shared import config
from shared.errors import ConfigurationError

URL_VARS = ("DATABASE_URL", "POSTGRES_URL", "PRISMA_DATABASE_URL", "DATABASE_SECRET_ARN")
DIRECT_VARS = config.DIRECT_DATABASE_URL_VARIABLES
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*URL_VARS, *DIRECT_VARS, "DATABASE_PROXY_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config.reset_caches()
    yield
    config.reset_caches()


def test_database_url_wins_over_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISMA_DATABASE_URL", "postgresql://p@h/prisma")
    monkeypatch.setenv("POSTGRES_URL", "postgresql://p@h/postgres")
    monkeypatch.setenv("DATABASE_URL", "postgresql://p@h/database")
    assert config.database_url() == "postgresql://p@h/database"


def test_postgres_url_wins_over_prisma_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISMA_DATABASE_URL", "postgresql://p@h/prisma")
    monkeypatch.setenv("POSTGRES_URL", "postgres://p@h/postgres")
    assert config.database_url() == "postgres://p@h/postgres"


def test_prisma_database_url_is_the_last_resort(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRISMA_DATABASE_URL", "postgresql://p@h/prisma")
    assert config.database_url() == "postgresql://p@h/prisma"


def test_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("POSTGRES_URL", "postgresql://p@h/postgres")
    assert config.database_url() == "postgresql://p@h/postgres"


def test_migrations_prefer_the_direct_url_in_neon_vercel_prisma_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://p@pooler/db")
    assert config.direct_database_url() == "postgresql://p@pooler/db"  # none: the pooled one
    monkeypatch.setenv("DIRECT_URL", "postgresql://p@direct/prisma")
    assert config.direct_database_url() == "postgresql://p@direct/prisma"
    monkeypatch.setenv("POSTGRES_URL_NON_POOLING", "postgresql://p@direct/vercel")
    assert config.direct_database_url() == "postgresql://p@direct/vercel"
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://p@direct/neon")
    assert config.direct_database_url() == "postgresql://p@direct/neon"
    assert config.database_url() == "postgresql://p@pooler/db"  # requests keep the pooled one
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "prisma+postgres://accelerate")
    with pytest.raises(ConfigurationError, match="DATABASE_URL_UNPOOLED"):
        config.direct_database_url()


def test_nothing_configured_names_every_option() -> None:
    with pytest.raises(ConfigurationError) as caught:
        config.database_url()
    for name in URL_VARS:
        assert name in caught.value.detail


def test_accelerate_url_is_refused_with_an_explanation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "prisma+postgres://accelerate.prisma-data.net/?api_key=k")
    with pytest.raises(ConfigurationError) as caught:
        config.database_url()
    assert "Accelerate" in caught.value.detail
    assert "DATABASE_URL" in caught.value.detail
    assert "api_key" not in caught.value.detail


def test_non_postgres_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="postgresql://"):
        config.database_url()


def _create_secret(value: str) -> str:
    client = boto3.client("secretsmanager")
    return str(client.create_secret(Name="tripchat/db", SecretString=value)["ARN"])


@mock_aws
def test_rds_secret_builds_a_quoted_url_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    rds_secret = {
        "engine": "postgres",
        "username": "app user",
        "password": "p@ss:w/rd",
        "host": "db.example.internal",
        "port": 6543,
        "dbname": "trips",
    }
    arn = _create_secret(json.dumps(rds_secret))
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    expected = "postgresql://app%20user:p%40ss%3Aw%2Frd@db.example.internal:6543/trips"
    assert config.database_url() == expected

    # Fetched once and cached: the secret's deletion is not seen until the cache is reset.
    boto3.client("secretsmanager").delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert config.database_url() == expected
    config.reset_caches()
    with pytest.raises(ConfigurationError, match="Could not read the secret"):
        config.database_url()


@mock_aws
@pytest.mark.parametrize("through_extension", [False, True], ids=["powertools", "extension"])
def test_rds_proxy_serves_requests_and_migrations_go_direct(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, through_extension: bool
) -> None:
    extension = request.getfixturevalue("extension") if through_extension else None
    secret = {"username": "app", "password": "p@ss", "host": "db.internal", "dbname": "trips"}
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(json.dumps(secret)))
    monkeypatch.setenv("DATABASE_PROXY_ENDPOINT", "trips.proxy-abc.eu-west-1.rds.amazonaws.com")
    assert config.database_url() == (
        "postgresql://app:p%40ss@trips.proxy-abc.eu-west-1.rds.amazonaws.com:5432/trips"
    )
    assert config.direct_database_url() == "postgresql://app:p%40ss@db.internal:5432/trips"
    if extension is not None:  # one read of the secret served both URLs
        assert len(extension.requests) == 1


def test_prisma_only_url_parameters_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Vercel's POSTGRES_PRISMA_URL and Prisma's Supabase guide look like.
    monkeypatch.setenv(
        "DATABASE_URL",
        "postgresql://u:p@pooler.example:6543/db?pgbouncer=true&connect_timeout=15"
        "&connection_limit=1&sslmode=require&schema=public",
    )
    assert config.database_url() == (
        "postgresql://u:p@pooler.example:6543/db?connect_timeout=15&sslmode=require"
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@h/db?schema=travel")
    with pytest.raises(ConfigurationError, match="schema=travel"):
        config.database_url()


@mock_aws
def test_env_url_takes_priority_over_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    arn = _create_secret(json.dumps({"username": "u", "password": "p", "host": "h"}))
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    monkeypatch.setenv("POSTGRES_URL", "postgresql://env@h/db")
    assert config.database_url() == "postgresql://env@h/db"


@mock_aws
def test_secret_without_required_keys_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_SECRET_ARN", _create_secret(json.dumps({"host": "h"})))
    with pytest.raises(ConfigurationError, match="username, password, host"):
        config.database_url()


@mock_aws
def test_secret_setting_from_env_or_secrets_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.secret("BACKBOARD_API_KEY") is None
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="tripchat/backboard", SecretString="from-aws")["ARN"]
    monkeypatch.setenv("BACKBOARD_API_KEY_SECRET_ARN", arn)
    assert config.secret("BACKBOARD_API_KEY") == "from-aws"
    monkeypatch.setenv("BACKBOARD_API_KEY", "from-env")
    assert config.secret("BACKBOARD_API_KEY") == "from-env"


def test_settings_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = config.get_settings()
    assert defaults.db_pool_max_size == 1 and defaults.db_prepared_statements is False
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "3")
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "true")
    monkeypatch.setenv("CLERK_AUTHORIZED_PARTIES", "https://a.example, https://b.example,")
    config.reset_caches()
    settings = config.get_settings()
    assert settings.db_pool_max_size == 3 and settings.db_prepared_statements is True
    assert settings.clerk_authorized_parties == ("https://a.example", "https://b.example")


def test_invalid_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "zero")
    with pytest.raises(ConfigurationError, match="DB_POOL_MAX_SIZE"):
        config.Settings.from_env()
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "0")
    with pytest.raises(ConfigurationError, match="DB_POOL_MAX_SIZE"):
        config.Settings.from_env()


# The Parameters and Secrets extension (the template adds it with SecretsExtensionLayerArn):
# the same secrets, from localhost, with no boto3 in the function.


@pytest.fixture
def extension(monkeypatch: pytest.MonkeyPatch) -> Iterator[SecretsExtension]:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "invocation-session-token")
    with SecretsExtension("invocation-session-token") as standin:
        monkeypatch.setenv(config.SECRETS_EXTENSION_PORT_VARIABLE, str(standin.port))
        yield standin


@mock_aws
def test_extension_serves_secrets_cached_for_their_max_age(
    monkeypatch: pytest.MonkeyPatch, extension: SecretsExtension
) -> None:
    client = boto3.client("secretsmanager")
    arn = client.create_secret(Name="tripchat/backboard", SecretString="from-extension")["ARN"]
    monkeypatch.setenv("BACKBOARD_API_KEY_SECRET_ARN", arn)
    assert config.secret("BACKBOARD_API_KEY") == "from-extension"
    assert config.secret("BACKBOARD_API_KEY") == "from-extension"
    assert len(extension.requests) == 1  # the second read came from the cache

    client.put_secret_value(SecretId=arn, SecretString="rotated")
    assert config.secret("BACKBOARD_API_KEY") == "from-extension"  # still within its max age
    monkeypatch.setenv("SECRETS_MAX_AGE_SECONDS", "0")
    config.get_settings.cache_clear()
    assert config.secret("BACKBOARD_API_KEY") == "rotated"
    assert len(extension.requests) == 2


@mock_aws
def test_extension_failures_are_configuration_errors_naming_the_arn(
    monkeypatch: pytest.MonkeyPatch, extension: SecretsExtension
) -> None:
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tripchat/none-AbCdEf"
    monkeypatch.setenv("BACKBOARD_API_KEY_SECRET_ARN", missing)
    with pytest.raises(ConfigurationError, match=f"{missing} through the Parameters") as error:
        config.secret("BACKBOARD_API_KEY")
    # Secrets Manager's own reason, relayed by the extension, reaches the operator.
    assert "HTTP 400" in str(error.value) and "ResourceNotFoundException" in str(error.value)

    arn = boto3.client("secretsmanager").create_secret(Name="k", SecretString="v")["ARN"]
    monkeypatch.setenv("BACKBOARD_API_KEY_SECRET_ARN", arn)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "another-invocations-token")
    with pytest.raises(ConfigurationError, match="HTTP 401"):
        config.secret("BACKBOARD_API_KEY")

    nothing = free_port()  # no extension there: refused (or unreachable), never a hang
    monkeypatch.setenv(config.SECRETS_EXTENSION_PORT_VARIABLE, str(nothing))
    with pytest.raises(ConfigurationError, match=rf"extension \(localhost:{nothing}\): "):
        config.secret("BACKBOARD_API_KEY")


@mock_aws
def test_with_the_extension_the_function_never_imports_boto3(
    monkeypatch: pytest.MonkeyPatch, extension: SecretsExtension
) -> None:
    arn = boto3.client("secretsmanager").create_secret(Name="k", SecretString="v1")["ARN"]
    probe = (
        "import sys; from shared import config; "
        "print(config.secret('BACKBOARD_API_KEY'), 'boto3' in sys.modules)"
    )
    env = {**os.environ, "BACKBOARD_API_KEY_SECRET_ARN": arn}
    env.pop("BACKBOARD_API_KEY", None)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["v1", "False"]
    assert len(extension.requests) == 1
