"""Configuration: a TOML file (`--config`, default callrouter.toml) plus CALLROUTER_* variables.

Environment beats the file; nested keys use `__` (CALLROUTER_DATABASE_URL,
CALLROUTER_AGI__PORT). A bad config raises ConfigError naming the file, the key and
what is wrong; secrets never appear in that message or in logs (SecretStr).
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from callrouter.phone import DEFAULT_REGION

DEFAULT_CONFIG_FILE = "callrouter.toml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///callrouter.db"


class ConfigError(Exception):
    """A config that cannot be used; the message names file, key and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PbxConfig(_Strict):
    name: str = Field(default="main", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(default=5038, ge=1, le=65535)
    username: str = "callrouter"
    secret: SecretStr = SecretStr("")
    connect_timeout: float = Field(default=5.0, gt=0)
    # reconnect backoff: first wait, cap (seconds)
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    # frames larger than this are dropped (a 10 MB header line must not eat the daemon)
    max_frame_bytes: int = Field(default=1 << 20, ge=4096)
    # addresses this PBX's FastAGI requests come from (IP literals); empty: `host`.
    # With several PBXs a request is attributed by `pbx=` in its AGI URL first, then by these
    agi_sources: tuple[str, ...] = ()


class ManagerConfig(_Strict):
    extension: str = Field(pattern=r"^[0-9A-Za-z*#+_-]+$")
    name: str | None = None
    devices: tuple[str, ...] = ()

    @field_validator("devices")
    @classmethod
    def _devices_look_like_devices(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for d in v:
            if "/" not in d:
                raise ValueError(f"device {d!r} is not TECH/resource (e.g. PJSIP/101)")
        return v


class AgiConfig(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(default=4573, ge=0, le=65535)  # 0: any free port (tests)
    deadline_ms: float = Field(default=300.0, gt=0)
    default_dial: str = "Local/support@queues"
    default_timeout: int = Field(default=20, ge=1)
    # "array": every variable in one `SET VARIABLE ARRAY(...)` command, one round trip
    # (needs func_strings, loaded on every stock Asterisk); "each": one command per variable
    set_variables: Literal["array", "each"] = "array"
    # "process": decisions are stored by a child process, so database work never competes
    # with answering calls for the daemon's GIL; "inline": by a task on the daemon's loop
    decision_log: Literal["process", "inline"] = "process"


class WebConfig(_Strict):
    """The REST API inside the daemon (callrouter.web)."""
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    # a browser session (POST /login) lasts this long
    session_hours: float = Field(default=12.0, gt=0)
    # mark the session cookie Secure: set it when a TLS proxy is in front
    secure_cookie: bool = False


class MqttConfig(_Strict):
    """Screen-pops to an MQTT broker (callrouter.screenpop.mqtt); off when `[mqtt]` is absent."""
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    client_id: str | None = None          # None: callrouter-<first pbx>
    topic_prefix: str = Field(default="callrouter", min_length=1, pattern=r"^[^#+]+$")
    keepalive: int = Field(default=30, ge=5)
    # pops waiting for the broker; beyond it (an outage) they are dropped and counted
    queue_size: int = Field(default=1000, ge=1)
    reconnect_min: float = Field(default=0.5, gt=0)
    reconnect_max: float = Field(default=15.0, gt=0)


class ScreenPopConfig(_Strict):
    """The pop's card and click-to-call (callrouter.screenpop)."""
    # the store part of a card (last calls, open callbacks) is waited for this long; then
    # the pop goes without it (`card_status: "timeout"`)
    card_timeout_ms: float = Field(default=150.0, gt=0)
    # click-to-call: the dialplan context the client's number is dialled in
    originate_context: str = "from-internal"
    originate_timeout: int = Field(default=30, ge=1)   # s the manager's phone rings
    # callbacks for clients without an owner go to this queue name
    desk: str = "desk"


class RecordingsConfig(_Strict):
    """Where the PBX's recordings are (issue 17): a call record's `recording` is served
    only when it resolves inside `dir` (callrouter.web.recordings). Empty: none served."""
    dir: str = ""


class SpoolConfig(_Strict):
    """The local spool for what the database does not take (callrouter.store.spool)."""
    path: str = "callrouter-spool.db"
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)


class WebhookConfig(_Strict):
    """Finished calls POSTed to the CRM (callrouter.webhook); no [webhook] table: off."""
    url: str = Field(pattern=r"^https?://\S+$")
    # HMAC-SHA256 key of X-Callrouter-Signature; never logged
    secret: SecretStr
    timeout: float = Field(default=10.0, gt=0)           # s per POST, connect to answer
    # tries of a call the receiver refuses for good (a 4xx other than 408/429) before it
    # becomes a dead letter; a receiver that is down or failing (5xx, 408, 429, no
    # answer) is retried for as long as it takes
    max_attempts: int = Field(default=5, ge=1)
    retry_min: float = Field(default=1.0, gt=0)           # s: first wait after a failure, doubling...
    retry_max: float = Field(default=300.0, gt=0)         # ...up to this
    concurrency: int = Field(default=4, ge=1, le=64)      # POSTs in flight (different calls)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)  # bodies held in the outbox

    @field_validator("secret")
    @classmethod
    def _long_enough(cls, v: SecretStr) -> SecretStr:
        if len(v.get_secret_value()) < 16:  # a guessable key makes the signature worthless
            raise ValueError("the webhook secret must be at least 16 characters (e.g. openssl rand -hex 32)")
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLROUTER_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    default_region: str = Field(default=DEFAULT_REGION, pattern=r"^[A-Z]{2}$")
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    rules_dir: str = "rules"
    pbx: tuple[PbxConfig, ...] = (PbxConfig(),)
    managers: tuple[ManagerConfig, ...] = ()
    agi: AgiConfig = AgiConfig()
    web: WebConfig = WebConfig()
    spool: SpoolConfig = SpoolConfig()
    webhook: WebhookConfig | None = None
    mqtt: MqttConfig | None = None
    screenpop: ScreenPopConfig = ScreenPopConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    # the PBX's time zone (IANA name): supervisors' days, weeks, months and hours of day
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (an IANA name, e.g. Europe/Moscow)") from None
        return v

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        names = [p.name for p in self.pbx]
        if len(set(names)) != len(names):
            raise ValueError("pbx names must be unique")
        seen: dict[str, str] = {}
        for m in self.managers:
            for d in m.devices:
                if d.lower() in seen:
                    raise ValueError(f"device {d} belongs to both {seen[d.lower()]} and {m.extension}")
                seen[d.lower()] = m.extension
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the parsed TOML file) < environment: an operator's env var overrides the file
        return env_settings, init_settings


_SECRETISH = re.compile(r"secret|password|token", re.I)


def _describe(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if _SECRETISH.search(key):
        return f"{key}: {msg}"  # never echo the value of a secret
    if err.get("type") == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {msg} (got {err.get('input')!r})"[:300]


def load_settings(path: str | Path | None = None, *, required: bool = False) -> Settings:
    """Read the TOML file (when it exists, or fail when `required`) and the environment."""
    file = Path(path or DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file}: not valid TOML: {e}") from None
        except OSError as e:
            raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    elif required or path is not None:
        raise ConfigError(f"{file}: config file not found")
    try:
        return Settings(**data)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{file}: {problems}") from None
