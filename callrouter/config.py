"""Configuration: a TOML file (`--config`, default callrouter.toml) plus CALLROUTER_* variables.

Environment beats the file; nested keys use `__` (CALLROUTER_DATABASE_URL,
CALLROUTER_AGI__PORT), list entries their index (CALLROUTER_PBX__0__SECRET). A bad config raises ConfigError naming the file, the key and
what is wrong; secrets never appear in that message or in logs (SecretStr).
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

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
    # "process": the FastAGI server and the router run in a child process, so the call
    # log's work (AMI bursts, store writes) never delays an answer; "inline": on the
    # daemon's event loop (one process; a test's fixed clock needs it)
    routing: Literal["process", "inline"] = "process"


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
        # init (the parsed TOML file) < environment: an operator's env var overrides the file;
        # CALLROUTER_PBX__0__SECRET-style variables are merged onto the file's list entries
        return _IndexedEnvSource(settings_cls, init_settings), init_settings


ENV_PREFIX = "CALLROUTER_"
_LIST_FIELDS = {"pbx": PbxConfig, "managers": ManagerConfig}  # lists of tables: indexable from env
_INDEXED = re.compile(r"^(pbx|managers)__(.*)$", re.I)


class _IndexedEnvSource(EnvSettingsSource):
    """The environment, where a list of tables can also be set one field at a time:
    CALLROUTER_PBX__0__SECRET sets `secret` of the file's first [[pbx]] (of the default one
    when the file has none; index N = the list's length adds an entry). pydantic-settings
    would read such variables as a mapping {"0": {...}} that replaces the whole list."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._init = init
        self._indexed: dict[str, list[tuple[str, str | None]]] = {}
        rest = {}
        prefix = ENV_PREFIX.lower()
        for name, value in self.env_vars.items():
            m = _INDEXED.match(name[len(prefix):]) if name.lower().startswith(prefix) else None
            if m is None:
                rest[name] = value
            else:
                self._indexed.setdefault(m.group(1).lower(), []).append((m.group(2), value))
        self.env_vars = rest

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        init = self._init()
        for field, items in self._indexed.items():
            default = Settings.model_fields[field].default
            base = data.get(field, init.get(field, [{} for _ in default]))
            data[field] = _merge_indexed(field, base, items)
        return data


def _env_name(*parts: object) -> str:
    return ENV_PREFIX + "__".join(str(p) for p in parts).upper()


def _merge_indexed(field: str, base: Any, items: list[tuple[str, str | None]]) -> Any:
    """`base` (the list from the file or CALLROUTER_<FIELD>) with each <index>__<key> applied."""
    if not isinstance(base, list | tuple) or not all(isinstance(x, dict) for x in base):
        return base  # the file's own shape is wrong: validation names that
    entries = [dict(x) for x in base]
    model = _LIST_FIELDS[field]
    for rest, value in sorted(items, key=lambda kv: kv[0]):
        index, _, key = rest.partition("__")
        if not index.isdigit() or not key or "__" in key:
            raise ConfigError(f"{_env_name(field, rest)}: {field} is a list: name an entry and one of its "
                              f"keys, e.g. {_env_name(field, 0, 'host')}")
        i = int(index)
        if i > len(entries):
            raise ConfigError(f"{_env_name(field, rest)}: {field} has {len(entries)} entr"
                              f"{'y' if len(entries) == 1 else 'ies'}; the next one is index {len(entries)}")
        if i == len(entries):
            entries.append({})
        info = model.model_fields.get(key.lower())
        if info is not None and get_origin(info.annotation) in (tuple, list) and value is not None:
            try:  # a list value is JSON, as pydantic-settings reads CALLROUTER_AGI__... lists
                entries[i][key.lower()] = json.loads(value)
            except ValueError:
                raise ConfigError(f"{_env_name(field, rest)}: not a JSON list (e.g. [\"10.0.0.5\"])") from None
        else:
            entries[i][key.lower()] = value
    return entries


_SECRETISH = re.compile(r"secret|password|token", re.I)


def _scalar_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Paths of the settings' scalar leaves ("*" for a list index): only there may an error
    quote the value it got; anywhere else the value may be a table holding a secret."""
    out: set[tuple[str, ...]] = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        args = [a for a in get_args(ann) if a is not type(None)] if get_origin(ann) in (Union, UnionType) else [ann]
        ann = args[0] if len(args) == 1 else ann
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _scalar_paths(ann, (*prefix, name))
        elif get_origin(ann) in (tuple, list):
            item = get_args(ann)[0] if get_args(ann) else None
            if isinstance(item, type) and issubclass(item, BaseModel):
                out |= _scalar_paths(item, (*prefix, name, "*"))
        elif not _SECRETISH.search(name) and ann is not SecretStr:
            out.add((*prefix, name))
    return out


def _secrets_in(data: Any, under_secret: bool = False) -> set[str]:
    """Every string held under a secret-looking key, at any depth."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            found |= _secrets_in(v, under_secret or bool(_SECRETISH.search(str(k))))
    elif isinstance(data, list | tuple):
        for v in data:
            found |= _secrets_in(v, under_secret)
    elif under_secret and data is not None and len(str(data)) >= 3:
        found.add(str(data))
    return found


def _describe(err: dict[str, Any], quotable: set[tuple[str, ...]]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    env = _env_name(*loc) if loc else ""
    where = f"{key} ({env})" if env and env.lower() in _environ_lower() else key
    if err.get("type") == "extra_forbidden":
        return f"{where}: unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    if len(loc) == 1 and loc[0] in _LIST_FIELDS and err.get("type") in ("tuple_type", "list_type"):
        msg = f"must be a list of tables: write [[{loc[0]}]], not [{loc[0]}] or {loc[0]} = ..."
    value = err.get("input")
    path = tuple("*" if isinstance(p, int) else p for p in loc)
    if path in quotable and isinstance(value, str | int | float | bool) and len(str(value)) <= 80:
        return f"{where}: {msg} (got {value!r})"
    return f"{where}: {msg}"  # the value may be, or hold, a secret: never echoed


def _environ_lower() -> set[str]:
    return {k.lower() for k in os.environ}


def _redact(text: str, secrets: set[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def _env_secrets() -> set[str]:
    return {v for k, v in os.environ.items()
            if k.upper().startswith(ENV_PREFIX) and _SECRETISH.search(k) and len(v) >= 3}


def load_settings(path: str | Path | None = None, *, required: bool = False) -> Settings:
    """Read the TOML file (when it exists, or fail when `required`) and the environment.
    Raises ConfigError: one line naming the file or variable, the key and the problem, never
    a secret's value (whatever the shape of the mistake)."""
    file = Path(path or DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file}: not valid TOML: {e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file}: not UTF-8 text") from None
        except OSError as e:
            raise ConfigError(f"{file}: cannot read: {e.strerror}") from None
    elif required or path is not None:
        raise ConfigError(f"{file}: config file not found")
    secrets = _secrets_in(data) | _env_secrets()
    try:
        return Settings(**data)
    except ValidationError as e:
        quotable = _scalar_paths(Settings)
        problems = "; ".join(_describe(err, quotable) for err in e.errors(include_input=True, include_url=False))
        raise ConfigError(_redact(f"{file}: {problems}", secrets)) from None
    except SettingsError as e:  # a CALLROUTER_* variable that should hold JSON does not
        field = re.search(r'field "([^"]+)"', str(e))
        name = _env_name(field.group(1)) if field else "a CALLROUTER_* variable"
        raise ConfigError(f"{name}: not valid JSON (a table or list from the environment is JSON, "
                          f"or set one key: {_env_name('agi', 'port')}, {_env_name('pbx', 0, 'secret')})") from None
