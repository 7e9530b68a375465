"""Typed rows: pydantic models for the seed's User, Session and Message.

Fields are snake_case in Python and camelCase in the database (the Prisma-compatible column
names); the alias generator maps one onto the other, so rows load straight into the models.
Timestamps are stored as UTC without a time zone (as Prisma does) and come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Role = Literal["user", "assistant"]


class Row(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class User(Row):
    id: str
    clerk_id: str
    assistant_id: str
    email: str
    name: str | None
    created_at: UtcDatetime


class Session(Row):
    """A trip: one Backboard thread under the user's assistant."""

    id: str
    title: str | None
    user_id: str
    thread_id: str
    created_at: UtcDatetime


class Message(Row):
    id: str
    role: Role
    content: str
    session_id: str
    created_at: UtcDatetime
