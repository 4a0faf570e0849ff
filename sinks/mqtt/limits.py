"""The ``mqtt`` sink's caps (``rate_limit``): per topic and in total, in wire bytes and
messages per second, with the sampling that keeps under them, and the budget in Redis
that several instances share (``rate_limit.shared``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from logstream.severity import parse_name

from .topics import check_topic_filter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SharedBudgetConfig(_Strict):
    """One budget for every instance using the same Redis ``key`` (``rate_limit.shared``)."""

    redis: SecretStr = Field(
        description="redis://[user:password@]host:6379/0 (rediss:// for TLS); never logged "
        "with its password."
    )
    key: str = Field(min_length=1, max_length=200, description="Name of the shared budget.")
    expected_instances: int = Field(
        default=2, ge=1, le=10_000, description="How many instances share it, roughly."
    )
    fallback_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Part of each cap an instance uses alone while Redis is unreachable "
        "(default: 1 / expected_instances).",
    )

    @model_validator(mode="after")
    def _check_redis(self) -> SharedBudgetConfig:
        # Checked here, not in a field validator: a field's error shows its value,
        # and this one may hold a password.
        parts = urlsplit(self.redis.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            raise ValueError(
                "redis must be a redis://[user:password@]host[:port][/db] or rediss:// URL"
            )
        return self

    @property
    def local_share(self) -> float:
        return self.fallback_share or 1.0 / self.expected_instances


class TopicCaps(_Strict):
    """Caps of the topics an MQTT topic filter matches (``rate_limit.topics``)."""

    bytes_per_sec: float | None = Field(default=None, gt=0, description="Wire bytes/s.")
    messages_per_sec: float | None = Field(default=None, gt=0, description="Messages/s.")


class RateLimitConfig(_Strict):
    """Token-bucket caps on what the sink publishes, and the sampling that keeps under them.

    Bytes are wire bytes: the PUBLISH packet with its header, topic and
    properties, after compression.
    """

    topic_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of every topic (each has its own bucket)."
    )
    topic_messages_per_sec: float | None = Field(default=None, gt=0)
    total_bytes_per_sec: float | None = Field(
        default=None, gt=0, description="Cap of everything the sink publishes."
    )
    total_messages_per_sec: float | None = Field(default=None, gt=0)
    topics: dict[str, TopicCaps] = Field(
        default_factory=dict,
        description="MQTT topic filter -> caps replacing topic_*; the first match wins.",
    )
    burst_secs: float = Field(
        default=0.02,
        gt=0,
        le=10,
        description="Bucket capacity in seconds of the rate: any 1 s window carries at most "
        "cap * (1 + burst_secs). Payloads are kept to half of it.",
    )
    queue_secs: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="Payloads waiting for tokens, in seconds of the rate; more are dropped.",
    )
    adaptive: bool = Field(
        default=True,
        description="Lower keep ratios per severity (lowest first) to fit the byte caps "
        "instead of dropping whole payloads.",
    )
    window_secs: float = Field(default=1.0, gt=0, le=60, description="How often ratios change.")
    accounting_interval_secs: float = Field(
        default=10.0, ge=0, description="How often a topic that lost events is told (0: never)."
    )
    shared: SharedBudgetConfig | None = Field(
        default=None,
        description="Draw the byte/message caps from one budget in Redis shared with other "
        "instances (default: this instance's own, shared by its worker processes).",
    )
    level_field: str = Field(default="level", description="The field holding the severity.")
    unknown_level: str = Field(
        default="INFO", description="Severity of events whose level is missing or unknown."
    )

    @field_validator("topics")
    @classmethod
    def _check_filters(cls, value: dict[str, TopicCaps]) -> dict[str, TopicCaps]:
        for topic_filter, caps in value.items():
            check_topic_filter(topic_filter)
            if caps.bytes_per_sec is None and caps.messages_per_sec is None:
                raise ValueError(
                    f"topics.{topic_filter}: give bytes_per_sec and/or messages_per_sec"
                )
        return value

    @field_validator("unknown_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        return parse_name(value).name

    def byte_caps(self) -> dict[str, float]:
        """The byte caps by topic filter, in the order they apply (first match wins):
        each ``topics`` filter with ``bytes_per_sec``, ``#`` for ``topic_bytes_per_sec``
        and ``*`` for ``total_bytes_per_sec`` (what ``/metrics`` and the /tail page show)."""
        caps = {f: c.bytes_per_sec for f, c in self.topics.items() if c.bytes_per_sec is not None}
        if self.topic_bytes_per_sec is not None:
            caps.setdefault("#", self.topic_bytes_per_sec)
        if self.total_bytes_per_sec is not None:
            caps["*"] = self.total_bytes_per_sec
        return caps

    @property
    def any_caps(self) -> bool:
        return any(
            value is not None
            for value in (
                self.topic_bytes_per_sec,
                self.topic_messages_per_sec,
                self.total_bytes_per_sec,
                self.total_messages_per_sec,
            )
        ) or bool(self.topics)
