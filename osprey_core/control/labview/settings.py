"""The ``labview`` config section: server, credentials and channel mappings."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from osprey_core.control.http import check_http_url
from osprey_core.control.labview.paths import check_template, parse_json_path
from osprey_core.errors import ConfigError

HttpMethod = Literal["GET", "POST", "PUT"]
DataType = Literal["float", "int", "bool", "string", "enum", "array"]

# -- settings ---------------------------------------------------------------------------


class NoAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["none"] = "none"


class BasicAuth(BaseModel):
    """HTTP basic authentication (the LabVIEW web server's user accounts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["basic"]
    username: str = Field(description="User name.")
    password: SecretStr | None = Field(None, description="Password; prefer password_env.")
    password_env: str | None = Field(None, description="Environment variable holding the "
                                     "password.")

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if (self.password is None) == (self.password_env is None):
            raise ValueError("basic auth needs exactly one of password or password_env")
        return self

    def header(self, environ: Mapping[str, str]) -> str:
        password = _secret(self.password, self.password_env, environ, "password")
        raw = f"{self.username}:{password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


class BearerAuth(BaseModel):
    """A bearer token in the ``Authorization`` header (e.g. behind a reverse proxy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["bearer"]
    token: SecretStr | None = Field(None, description="The token; prefer token_env.")
    token_env: str | None = Field(None, description="Environment variable holding the token.")

    @model_validator(mode="after")
    def _one_token(self) -> BearerAuth:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("bearer auth needs exactly one of token or token_env")
        return self

    def header(self, environ: Mapping[str, str]) -> str:
        return "Bearer " + _secret(self.token, self.token_env, environ, "token")


def _secret(value: SecretStr | None, env: str | None, environ: Mapping[str, str],
            what: str) -> str:
    if value is not None:
        return value.get_secret_value()
    assert env is not None
    if not environ.get(env):
        raise ConfigError(f"labview.auth: environment variable {env} (the {what}) is not set")
    return environ[env]


Auth = Annotated[NoAuth | BasicAuth | BearerAuth, Field(discriminator="type")]


class HttpCall(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: HttpMethod = Field("GET", description="HTTP method: GET, POST or PUT.")
    url: str = Field(description="Path of the web method VI, relative to base_url; may hold "
                     "{channel}, {0} (the channel) and {1}.. (what the pattern's wildcards "
                     "matched), URL-encoded when filled in.")
    params: dict[str, str] = Field(default_factory=dict, description="Query parameters "
                                   "(templates like the URL).")
    body: Any = Field(None, description="Request body template (POST/PUT); a string that is "
                      "exactly '{value}' is replaced by the typed value.")
    body_format: Literal["json", "form"] = Field("json", description="Send the body as JSON "
                                                 "or as form fields.")
    error_path: str | None = Field(
        "error", description="JSON path of an error field in the answer; a LabVIEW error "
        "cluster ({status, code, source}) counts when its status is true.")

    @field_validator("url")
    @classmethod
    def _relative_url(cls, url: str) -> str:
        if "://" in url or url.startswith("//"):
            raise ValueError("url must be a path relative to base_url (credentials are only "
                             "sent to base_url)")
        if any(char.isspace() or not char.isprintable() for char in url):
            raise ValueError("url must not contain spaces or control characters")
        return url

    @field_validator("error_path")
    @classmethod
    def _valid_path(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path

    @model_validator(mode="after")
    def _form_body(self) -> HttpCall:
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET request has no body: use params")
        if self.body_format == "form" and self.body is not None and not (
                isinstance(self.body, dict)
                and all(not isinstance(item, dict | list) for item in self.body.values())):
            raise ValueError("a form body must be a flat mapping of field -> value")
        return self


class ReadCall(HttpCall):
    """The web method VI that reads a channel."""

    response: Literal["json", "text"] = Field(
        "json", description="Answer format: JSON, or plain text holding just the value.")
    value_path: str = Field("value", description="JSON path of the value, e.g. data.value "
                            "or $.value ('$' = the whole answer).")
    timestamp_path: str | None = Field(None, description="JSON path of the timestamp (epoch "
                                       "seconds or ISO 8601); default: time of the read.")
    severity_path: str | None = Field(None, description="JSON path of an alarm severity "
                                      "(0-3 or NO_ALARM/MINOR/MAJOR/INVALID).")
    status_path: str | None = Field(None, description="JSON path of an alarm status text.")

    @field_validator("value_path", "timestamp_path", "severity_path", "status_path")
    @classmethod
    def _valid_paths(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path


class WriteCall(HttpCall):
    """The web method VI that writes a channel; templates may use {value}."""

    method: HttpMethod = Field("POST", description="HTTP method: GET, POST or PUT.")
    success_path: str | None = Field(None, description="JSON path that must be true in the "
                                     "answer for the write to count as accepted.")
    message_path: str | None = Field(None, description="JSON path of the server's message "
                                     "when it refuses a write.")

    @field_validator("success_path", "message_path")
    @classmethod
    def _valid_paths(cls, path: str | None) -> str | None:
        if path is not None:
            parse_json_path(path)
        return path


class ChannelMapping(BaseModel):
    """Which web method VIs read and write the channels matching ``pattern``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str = Field(description="Channel name, or a glob (*, ?, [..]) whose wildcards "
                         "are available to templates as {1}, {2}, ...")
    read: ReadCall = Field(description="How to read these channels.")
    write: WriteCall | None = Field(None, description="How to write them (none: read-only).")
    writable: bool | None = Field(None, description="Default: true when write is set.")
    units: str | None = Field(None, description="Engineering units.")
    data_type: DataType | None = Field(
        None, description="float, int, bool, string, enum or array; values are converted "
        "to it (default: as the JSON answer has them).")
    precision: int | None = Field(None, ge=0, description="Display precision (digits).")
    description: str | None = Field(None, description="What the channel is.")

    @field_validator("pattern")
    @classmethod
    def _nonempty(cls, pattern: str) -> str:
        if not pattern or any(char.isspace() for char in pattern):
            raise ValueError("pattern must be a non-empty name without spaces")
        glob_regex(pattern)
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> ChannelMapping:
        if self.writable and self.write is None:
            raise ValueError(f"{self.pattern}: writable is true but no write method is set")
        wildcards = glob_regex(self.pattern).groups
        for where, call, allowed in (("read", self.read, {"channel"}),
                                     ("write", self.write, {"channel", "value"})):
            if call is None:
                continue
            for part in ("url", "params", "body"):
                check_template(getattr(call, part), allowed, wildcards,
                                f"{self.pattern}: {where}.{part}")
        return self

    @property
    def is_writable(self) -> bool:
        return self.write is not None and self.writable is not False


class LabviewSettings(BaseModel):
    """LabVIEW Web Services: where the server is and which method VIs serve which channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = Field(None, description="Web service root, e.g. "
                                 "http://lv-server:8001/SR (http or https).")
    auth: Auth = Field(default_factory=NoAuth, description="none | basic (username, "
                       "password_env) | bearer (token_env).")
    verify_tls: bool = Field(True, description="Check the server certificate (https).")
    ca_file: Path | None = Field(None, description="CA bundle (PEM) for a facility CA.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between polls of a "
                                 "subscribed channel.")
    max_concurrency: int = Field(8, ge=1, le=256, description="Requests in flight at once.")
    max_response_bytes: int = Field(10_000_000, ge=1024, description="Largest answer "
                                    "accepted.")
    channels: list[ChannelMapping] = Field(
        default_factory=list, description="Channel mappings; exact names win over "
        "patterns, then the first matching pattern.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return None if url is None else check_http_url(url, "base_url")

    @field_validator("channels")
    @classmethod
    def _unique_patterns(cls, channels: list[ChannelMapping]) -> list[ChannelMapping]:
        seen: set[str] = set()
        for mapping in channels:
            if mapping.pattern in seen:
                raise ValueError(f"pattern {mapping.pattern!r} is mapped twice")
            seen.add(mapping.pattern)
        return channels


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Glob -> regex where each wildcard is a group: ``*`` ``?`` ``[seq]`` ``[!seq]``."""
    out, position = [], 0
    while position < len(pattern):
        char = pattern[position]
        if char == "*":
            out.append("(.*?)")
        elif char == "?":
            out.append("(.)")
        elif char == "[":
            end = pattern.find("]", position + 2)
            if end < 0:
                raise ValueError(f"pattern {pattern!r}: unclosed '['")
            body = pattern[position + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("([" + body.replace("\\", "\\\\") + "])")
            position = end
        else:
            out.append(re.escape(char))
        position += 1
    return re.compile("".join(out))
