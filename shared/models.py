"""Typed rows: pydantic models for the seed's User, Session (a trip) and Message.

Fields are snake_case in Python and camelCase in the database (the Prisma-compatible column
names); the alias generator maps one onto the other, so rows load straight into the models.
Timestamps are stored as UTC without a time zone (as Prisma does) and come back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


def as_utc(value: datetime) -> datetime:
    """Aware, in UTC; a naive value is taken as UTC (how the columns store it)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
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


class Trip(Row):
    """A trip (the "Session" table): one Backboard thread under the user's assistant."""

    id: str
    title: str | None
    user_id: str
    thread_id: str
    created_at: UtcDatetime


# Message, a "Message" row, is defined below with MessageOut, the API's shape it extends.


# API shapes: what the sessions and messages functions accept and return (camelCase JSON).

TITLE_MAX = 200
CONTENT_MAX = 8_000
QUERY_MAX = 200  # a search query, in characters


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _storable(text: str, field: str) -> str:
    """Text PostgreSQL and Backboard can take. JSON may escape half of a surrogate pair alone
    ("\\ud800"), which no UTF-8 can encode: refused here, before any side effect, instead of
    failing at the INSERT after a Backboard call."""
    if "\x00" in text:
        raise ValueError(f"{field} must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        message = f"{field} must not contain lone surrogates (unpaired \\ud800-\\udfff)"
        raise ValueError(message) from None
    return text


def _clean_title(value: str) -> str:
    title = value.strip()
    if not 1 <= len(title) <= TITLE_MAX:
        raise ValueError(f"title must be 1 to {TITLE_MAX} characters after trimming")
    return _storable(title, "title")


def _clean_content(value: str) -> str:
    content = value.strip()
    if not 1 <= len(content) <= CONTENT_MAX:
        raise ValueError(f"content must be 1 to {CONTENT_MAX} characters after trimming")
    return _storable(content, "content")


def _clean_query(value: str) -> str:
    query = value.strip()
    if not query:
        raise ValueError("q must contain a word to search for")
    if len(query) > QUERY_MAX:
        raise ValueError(f"q must be at most {QUERY_MAX} characters after trimming")
    return _storable(query, "q")


Title = Annotated[str, AfterValidator(_clean_title)]
Content = Annotated[str, AfterValidator(_clean_content)]
SearchText = Annotated[str, AfterValidator(_clean_query)]


class CreateTripRequest(ApiModel):
    title: Title | None = None


class RenameTripRequest(ApiModel):
    title: Title


class SendMessageRequest(ApiModel):
    content: Content


class UiMessagePart(BaseModel):
    """A part of an AI SDK UIMessage; only text parts are read."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str
    text: str | None = None


class UiMessage(BaseModel):
    """An AI SDK UIMessage as DefaultChatTransport sends it (id, role, parts, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    id: str | None = Field(default=None, max_length=200)
    role: str
    parts: list[UiMessagePart] = Field(default_factory=list)


class StreamMessageRequest(BaseModel):
    """A streamed send: `{"content"}` as for POST /messages, or the body the AI SDK's
    DefaultChatTransport sends by default (`{id, messages, trigger, messageId}`), whose last
    user message's text is the content. Other fields (the transport's, a front end's own
    `body`) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    content: Content | None = None
    # The whole conversation, as the transport sends it by default; MAX_BODY_BYTES bounds it.
    messages: list[UiMessage] | None = None

    @model_validator(mode="after")
    def _has_text(self) -> StreamMessageRequest:
        if self.content is None:
            _clean_content(self._ui_text())  # the same rules as `content`
        return self

    def _last_user_message(self) -> UiMessage | None:
        users = [m for m in self.messages or [] if m.role == "user"]
        return users[-1] if users else None

    def _ui_text(self) -> str:
        last = self._last_user_message()
        if last is None:
            raise ValueError("send content, or messages with a user message")
        return "".join(p.text or "" for p in last.parts if p.type == "text")

    def text(self) -> str:
        """The message to send, trimmed and checked."""
        return self.content if self.content is not None else _clean_content(self._ui_text())

    def ui_message_key(self) -> str | None:
        """An Idempotency-Key when the client sent none: the AI SDK's id for the user's
        message, which a retry of the same message keeps."""
        last = self._last_user_message() if self.content is None else None
        return f"ui-{last.id}" if last is not None and last.id else None


class TripOut(ApiModel):
    id: str
    title: str | None
    created_at: UtcDatetime

    @classmethod
    def of(cls, trip: Trip) -> TripOut:
        # The row was validated when it was read: no second validation per trip on a page.
        return cls.model_construct(id=trip.id, title=trip.title, created_at=trip.created_at)


class TripPage(ApiModel):
    sessions: list[TripOut]
    next_cursor: str | None  # pass as ?cursor= for the next (older) page; None at the end


class MessageOut(ApiModel):
    id: str
    role: Role
    content: str
    created_at: UtcDatetime

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        # The row was validated when it was read: no second validation per message on a page.
        return cls.model_construct(
            id=message.id, role=message.role, content=message.content, created_at=message.created_at
        )


class Message(MessageOut):
    """A stored message (a "Message" row): what the API shows of it, plus its trip.

    A subclass of MessageOut so that a page of stored messages goes into MessagePage as it
    is: pydantic takes an instance of a field's model class without validating it again and
    serializes it as that class (MessageOut's fields: trip_id is never sent). Building a
    MessageOut per message cost a page of 50 more than its JSON did."""

    # Rows carry other columns too (the page statement's owner and trip); ApiModel forbids
    # extra keys for request bodies, which a row is not.
    model_config = ConfigDict(extra="ignore")
    trip_id: str = Field(alias="sessionId")


class MessagePage(ApiModel):
    messages: list[MessageOut]  # always in conversation order, oldest first
    older_cursor: str | None  # pass as ?before= for older messages; None when there are none
    # Pass as ?after= for messages newer than this page (or to poll); None for an empty page.
    newer_cursor: str | None
    # Replies not yet in `messages` (streamed sends): being written ("streaming") or broken
    # off ("failed"; a retry with the same Idempotency-Key resumes the turn). Newest first.
    pending_replies: list[PendingReplyOut] = Field(default_factory=list)


class PendingReplyOut(ApiModel):
    """A streamed reply not yet complete: its text so far."""

    user_message_id: str
    assistant_message_id: str  # the id it will have in `messages` once complete
    status: Literal["streaming", "failed"]
    content: str
    updated_at: UtcDatetime


class TurnOut(ApiModel):
    user_message: MessageOut
    assistant_message: MessageOut


class TripRef(ApiModel):
    id: str
    title: str | None


class SearchHitOut(ApiModel):
    trip: TripRef
    message_id: str | None  # None: the trip's title matched
    role: Role | None  # the message's author; None for a title hit
    created_at: UtcDatetime  # the message's, or the trip's for a title hit
    # HTML: the text around the matches with &, <, >, " and ' escaped, and each match wrapped
    # in <mark>...</mark>: safe to insert as HTML as it is.
    snippet: str


class SearchPage(ApiModel):
    hits: list[SearchHitOut]  # best first
    next_cursor: str | None  # pass as ?cursor= (with the same q) for more; None at the end


class ExportPart(ApiModel):
    """One part of a trip's export (format=json): the whole conversation when it fits in one
    response, else consecutive parts linked by next_cursor."""

    trip: TripOut
    exported_at: UtcDatetime
    message_count: int  # messages in the whole trip
    offset: int  # messages in the parts before this one
    messages: list[MessageOut]  # in conversation order
    next_cursor: str | None  # pass as ?cursor= for the next part; None for the last


class MemoryOut(ApiModel):
    """One thing the assistant remembers of the traveller."""

    id: str
    content: str
    created_at: UtcDatetime | None  # None when Backboard did not say
    updated_at: UtcDatetime | None


class MemoryPage(ApiModel):
    memories: list[MemoryOut]  # newest first
    next_cursor: str | None  # pass as ?cursor= for the next (older) page; None at the end


class Totals(ApiModel):
    trips: int
    messages: int
    memories: int | None  # None when the assistant service could not be asked just now


class ProfileOut(ApiModel):
    id: str
    email: str  # empty until Clerk tells us one (see README, Users)
    name: str | None
    created_at: UtcDatetime
    totals: Totals
