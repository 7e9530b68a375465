"""Settings, read from the environment once per container, and secrets, fetched lazily.

Every secret setting FOO can be given either as the plain environment variable FOO (local
development, tests) or as FOO_SECRET_ARN naming an AWS Secrets Manager secret (deployed). The
secret is fetched on first use through Powertools Parameters, or, where the function carries
the AWS Parameters and Secrets Lambda Extension (PARAMETERS_SECRETS_EXTENSION_HTTP_PORT set),
from that extension over localhost; either way it is cached for SECRETS_MAX_AGE_SECONDS, so a
rotated secret is picked up without a redeploy.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigurationError

# The seed's priority: the first one set wins.
DATABASE_URL_VARIABLES = ("DATABASE_URL", "POSTGRES_URL", "PRISMA_DATABASE_URL")
# A direct (unpooled) URL for migrations, under the names Neon, Vercel and Prisma's docs use;
# the first one set wins, else migrations use the URL above.
DIRECT_DATABASE_URL_VARIABLES = ("DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING", "DIRECT_URL")
DATABASE_SECRET_VARIABLE = "DATABASE_SECRET_ARN"  # noqa: S105 (a variable name)
# RDS Proxy: the request path connects here with the secret's credentials; migrations keep
# the secret's own (direct) host.
DATABASE_PROXY_VARIABLE = "DATABASE_PROXY_ENDPOINT"
# Set (by the template) when the function carries AWS's Parameters and Secrets extension: its
# port on localhost. The extension fetches and caches in its own process, so the function never
# imports boto3 or builds a Secrets Manager client (most of a cold first request's setup).
SECRETS_EXTENSION_PORT_VARIABLE = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
SECRETS_EXTENSION_TIMEOUT_SECONDS = 5.0
_extension_cache: dict[str, tuple[float, str]] = {}
# Connection-string parameters only Prisma understands (copied pooled URLs carry them);
# libpq refuses unknown ones, so they are dropped.
PRISMA_ONLY_PARAMETERS = frozenset(
    {"pgbouncer", "connection_limit", "pool_timeout", "statement_cache_size", "socket_timeout"}
)


def _env_value(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else None


class Settings(BaseModel):
    """Every non-secret setting the project reads. Validated once, at first use."""

    model_config = ConfigDict(frozen=True)

    # One request at a time per container: one connection serves it (measured: same
    # throughput as two, half the server connections).
    db_pool_max_size: int = Field(default=1, ge=1, le=50)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(default=10_000, ge=100, le=900_000)
    # Off by default: safe behind every pooler (see README, Operating).
    db_prepared_statements: bool = False
    # A pooled connection idle longer than this is pinged before use.
    db_idle_check_seconds: float = Field(default=30.0, ge=0, le=3_600)

    backboard_base_url: str | None = None
    backboard_timeout_seconds: float = Field(default=20.0, gt=0, le=120)
    backboard_llm_provider: str | None = None
    backboard_model_name: str | None = None
    # After a trip's first reply is stored, how long the send may still wait for the title
    # asked for alongside it (shared.domain.titles); past that the trip keeps its default.
    auto_title_wait_seconds: float = Field(default=1.0, ge=0, le=10)

    clerk_issuer: str | None = None
    clerk_jwks_url: str | None = None
    clerk_jwt_key: str | None = None
    clerk_authorized_parties: tuple[str, ...] = ()
    clerk_api_url: str | None = None
    clerk_jwt_leeway_seconds: int = Field(default=5, ge=0, le=300)

    message_rate_limit_per_minute: int = Field(default=20, ge=1, le=10_000)
    # Each new trip is a Backboard thread: a loop of POST /sessions must not make thousands.
    trip_rate_limit_per_minute: int = Field(default=10, ge=1, le=10_000)
    max_body_bytes: int = Field(default=65_536, ge=1_024, le=6_000_000)
    secrets_max_age_seconds: int = Field(default=300, ge=0, le=86_400)

    @field_validator("clerk_authorized_parties", mode="before")
    @classmethod
    def _split_parties(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        names = {
            "db_pool_max_size": "DB_POOL_MAX_SIZE",
            "db_connect_timeout_seconds": "DB_CONNECT_TIMEOUT_SECONDS",
            "db_statement_timeout_ms": "DB_STATEMENT_TIMEOUT_MS",
            "db_prepared_statements": "DB_PREPARED_STATEMENTS",
            "db_idle_check_seconds": "DB_IDLE_CHECK_SECONDS",
            "backboard_base_url": "BACKBOARD_BASE_URL",
            "backboard_timeout_seconds": "BACKBOARD_TIMEOUT_SECONDS",
            "backboard_llm_provider": "BACKBOARD_LLM_PROVIDER",
            "backboard_model_name": "BACKBOARD_MODEL_NAME",
            "auto_title_wait_seconds": "AUTO_TITLE_WAIT_SECONDS",
            "clerk_issuer": "CLERK_ISSUER",
            "clerk_jwks_url": "CLERK_JWKS_URL",
            "clerk_jwt_key": "CLERK_JWT_KEY",
            "clerk_authorized_parties": "CLERK_AUTHORIZED_PARTIES",
            "clerk_api_url": "CLERK_API_URL",
            "clerk_jwt_leeway_seconds": "CLERK_JWT_LEEWAY_SECONDS",
            "message_rate_limit_per_minute": "MESSAGE_RATE_LIMIT_PER_MINUTE",
            "trip_rate_limit_per_minute": "TRIP_RATE_LIMIT_PER_MINUTE",
            "max_body_bytes": "MAX_BODY_BYTES",
            "secrets_max_age_seconds": "SECRETS_MAX_AGE_SECONDS",
        }
        values = {field: env[var] for field, var in names.items() if _env_value(env, var)}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{names[str(err['loc'][0])]}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigurationError(f"Invalid settings: {problems}") from exc


@functools.cache
def get_settings() -> Settings:
    """The container's settings, validated once. Tests call get_settings.cache_clear()."""
    return Settings.from_env()


def secret(name: str) -> str | None:
    """The secret setting `name`: the env var itself, else the Secrets Manager secret named by
    `name`_SECRET_ARN (fetched lazily, cached by Powertools), else None."""
    plain = os.environ.get(name)
    if plain:
        return plain
    arn = os.environ.get(f"{name}_SECRET_ARN")
    if not arn:
        return None
    return _fetch_secret_string(arn)


def _fetch_secret_string(arn: str) -> str:
    port = os.environ.get(SECRETS_EXTENSION_PORT_VARIABLE)
    if port:
        return _secret_from_extension(arn, port)
    # Imported here: boto3 costs cold-start time and most invocations never need it.
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(arn, max_age=get_settings().secrets_max_age_seconds)
    except parameters.exceptions.GetParameterError as exc:
        # The ARN is configuration, not a secret: naming it helps the operator.
        raise ConfigurationError(f"Could not read the secret {arn}: {exc}") from exc
    return str(value)


def _secret_from_extension(arn: str, port: str) -> str:
    """GET /secretsmanager/get on the extension, authenticated by the invocation's session
    token as the extension requires. Cached here for SECRETS_MAX_AGE_SECONDS, as Powertools
    would; the template turns the extension's own cache off, so that is the only one."""
    cached = _extension_cache.get(arn)
    if cached and time.monotonic() - cached[0] < get_settings().secrets_max_age_seconds:
        return cached[1]
    # http.client, not urllib: no proxy from the environment and no redirect can take the
    # session token anywhere but localhost. Imported here: only this path needs it.
    import http.client

    where = f"the Parameters and Secrets extension (localhost:{port})"
    try:
        connection = http.client.HTTPConnection(
            "localhost", int(port), timeout=SECRETS_EXTENSION_TIMEOUT_SECONDS
        )
        try:
            connection.request(
                "GET",
                f"/secretsmanager/get?secretId={quote(arn, safe='')}",
                headers={"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")},
            )
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise ConfigurationError(f"Could not read the secret {arn} through {where}: {exc}") from exc
    if response.status != 200:
        # The extension relays Secrets Manager's error (AccessDenied, ResourceNotFound, ...).
        reason = body[:300].decode("utf-8", "replace")
        raise ConfigurationError(
            f"Could not read the secret {arn} through {where}: HTTP {response.status} {reason}"
        )
    try:
        value = json.loads(body)["SecretString"]
    except (ValueError, KeyError, TypeError) as exc:  # never echo the body: it holds the secret
        raise ConfigurationError(f"The answer of {where} for {arn} is not a secret") from exc
    if not isinstance(value, str):
        raise ConfigurationError(f"The secret {arn} has no SecretString (a binary secret?)")
    _extension_cache[arn] = (time.monotonic(), value)
    return value


def database_url() -> str:
    """The PostgreSQL URL: DATABASE_URL > POSTGRES_URL > PRISMA_DATABASE_URL > the RDS-style
    JSON secret named by DATABASE_SECRET_ARN."""
    for name in DATABASE_URL_VARIABLES:
        value = os.environ.get(name)
        if value:
            return _checked_postgres_url(name, value)
    arn = os.environ.get(DATABASE_SECRET_VARIABLE)
    if arn:
        proxy = os.environ.get(DATABASE_PROXY_VARIABLE) or None
        return _url_from_rds_secret(arn, _fetch_secret_string(arn), host=proxy)
    raise ConfigurationError(
        "No database configured: set DATABASE_URL (preferred), POSTGRES_URL or "
        f"PRISMA_DATABASE_URL to a postgresql:// URL, or {DATABASE_SECRET_VARIABLE} to the ARN "
        "of a Secrets Manager secret holding username, password, host, port and dbname."
    )


def direct_database_url() -> str:
    """The URL migrations use: DATABASE_URL_UNPOOLED > POSTGRES_URL_NON_POOLING > DIRECT_URL,
    else the request path's URL (database_url). Migrations run DDL in long transactions,
    which belong on a direct connection, as with Prisma's directUrl."""
    for name in DIRECT_DATABASE_URL_VARIABLES:
        value = os.environ.get(name)
        if value:
            return _checked_postgres_url(name, value)
    arn = os.environ.get(DATABASE_SECRET_VARIABLE)
    if arn and not any(os.environ.get(name) for name in DATABASE_URL_VARIABLES):
        return _url_from_rds_secret(arn, _fetch_secret_string(arn))  # not the proxy's host
    return database_url()


def _checked_postgres_url(name: str, value: str) -> str:
    scheme = urlsplit(value).scheme.lower()
    if scheme in ("postgres", "postgresql"):
        return _without_prisma_parameters(name, value)
    if scheme.startswith("prisma"):
        raise ConfigurationError(
            f"{name} is a Prisma Accelerate URL ({scheme}://), which only Prisma's own client "
            "can use; it is not a PostgreSQL connection URL. Set it to the direct "
            "postgresql:// URL of the database instead."
        )
    raise ConfigurationError(
        f"{name} must be a postgresql:// or postgres:// URL, not a {scheme or 'schemeless'} one."
    )


def _without_prisma_parameters(name: str, url: str) -> str:
    """The URL without the parameters Prisma adds for itself (`?pgbouncer=true`, ...), which
    libpq would refuse. `schema` other than public cannot be honoured without a startup
    option (which poolers refuse): that is a clear error instead of a silent change."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in pairs if k == "schema"), "public")
    if schema != "public":
        raise ConfigurationError(
            f"{name} asks for schema={schema}: this backend uses the public schema (as the "
            "seed's Prisma models do); remove the parameter or use a database of its own."
        )
    kept = [(k, v) for k, v in pairs if k not in PRISMA_ONLY_PARAMETERS and k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def _url_from_rds_secret(arn: str, raw: str, host: str | None = None) -> str:
    try:
        data = json.loads(raw)
        username, password = data["username"], data["password"]
        host = host or data["host"]
        port = int(data.get("port", 5432))
        dbname = data.get("dbname") or data.get("dbName") or "postgres"
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"The secret {arn} must be JSON with username, password, host, port and dbname "
            "(the shape RDS generates)."
        ) from exc
    return (
        f"postgresql://{quote(str(username), safe='')}:{quote(str(password), safe='')}"
        f"@{host}:{port}/{quote(str(dbname), safe='')}"
    )


def reset_caches() -> None:
    """Forget settings and cached secrets (tests, and after rotating configuration)."""
    from aws_lambda_powertools.utilities import parameters

    get_settings.cache_clear()
    _extension_cache.clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
