"""TOML -> frozen Config dataclasses (DESIGN §5), checked once at load.

Field names equal the TOML keys. Durations become timedelta, sizes bytes, relative
paths are resolved against the config file's folder, and secrets are resolved here
so nothing reads the environment later. Any problem raises ConfigError(key).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_duration(text: str) -> dt.timedelta:
    """"90d", "12h", "30m", "45s", "2w" -> timedelta."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration like '90d', '12h', '30m' or '45s': {text!r}")
    return dt.timedelta(seconds=int(m.group(1)) * _DURATION_UNITS[m.group(2)])


def parse_size(text: str | int) -> int:
    """"25MB" -> bytes; a bare number is bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size like '25MB': {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


_PORT = re.compile(r"^[0-9]{1,5}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def parse_listen(listen: str) -> tuple[str, int]:
    """"127.0.0.1:9108", "[::1]:9108", "localhost:9108" or ":9108" (every IPv4 interface) -> (host, port).

    The one parser of [metrics] listen: load() checks the value with it, so `config check`
    refuses what `run` could not bind, and `run` takes host and port from it.
    """
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not _PORT.match(port) or not 0 < int(port) < 65536:
        raise ConfigError("metrics.listen", f'must be HOST:PORT such as "127.0.0.1:9108" '
                                            f"with a port from 1 to 65535, not {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            raise ConfigError("metrics.listen", f"{host} is not an IPv6 address in brackets like [::1]") from None
    if ":" in host:
        raise ConfigError("metrics.listen", f'an IPv6 address goes in brackets, like "[::1]:9108", not {listen!r}')
    if host and not _HOSTNAME.match(host):
        raise ConfigError("metrics.listen", f"{host!r} is not an address or host name")
    return host or "0.0.0.0", int(port)


class Duration(dt.timedelta):
    """Marks a field whose TOML value is a duration string."""


class Size(int):
    """Marks a field whose TOML value is a size string."""


class Secret(str):
    """A resolved password: never printed in full."""

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True)
class ServerConfig:
    """The keys [mailbox] and [smtp] share: the backend, the server and how to log in to it."""

    backend: str = "maildir"
    path: Path = Path("var")
    host: str = ""
    port: int = 0                      # 0: the usual port for `security` (effective_port)
    security: str = "ssl"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    oauth2_token_command: str = ""
    password: Secret | None = field(default=None, repr=False)   # resolved, not a TOML key


@dataclass(frozen=True)
class MailboxConfig(ServerConfig):
    path: Path = Path("var/inbox")
    security: str = "ssl"
    folder: str = "INBOX"
    processed_folder: str = "Processed"
    rejected_folder: str = "Rejected"
    quarantine_folder: str = "Quarantine"
    idle: bool = True
    poll_interval: Duration = Duration(seconds=30)
    max_message_size: Size = Size(25_000_000)
    max_attempts: int = 3

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)


@dataclass(frozen=True)
class SmtpConfig(ServerConfig):
    path: Path = Path("var/outbox")
    security: str = "starttls"
    from_address: str = "Smart Accounts <smart-accounts@example.com>"
    give_up_after: Duration = Duration(days=2)

    @property
    def effective_port(self) -> int:
        return self.port or {"ssl": 465, "starttls": 587}.get(self.security, 25)


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///var/smartacct.db"


# The embedded default (no config file) is a demo: it accepts the examples' partner domain only.
DEMO_PARTNER_DOMAINS = ("partner.example",)
ANYONE = "*"


@dataclass(frozen=True)
class WorkflowConfig:
    partner_domains: tuple[str, ...] = ()   # required in a config file (DESIGN §5); ("*",): anyone
    review_window: Duration = Duration(days=14)
    acceptance_window: Duration = Duration(days=90)
    reminders: tuple[Duration, ...] = (Duration(days=7), Duration(days=30), Duration(days=60), Duration(days=83))
    check_interval: Duration = Duration(seconds=60)
    max_users: int = 50
    require_customer_in_domain: bool = True
    default_language: str = "en"
    require_dmarc_pass: bool = False
    trusted_authserv_id: str = ""
    max_emails_per_address_per_hour: int = 20


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"
    format: str = "text"
    file: str = ""


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = ""


@dataclass(frozen=True)
class Config:
    mailbox: MailboxConfig = MailboxConfig()
    smtp: SmtpConfig = SmtpConfig()
    database: DatabaseConfig = DatabaseConfig()
    workflow: WorkflowConfig = WorkflowConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    # The file it was read from, None for the embedded default: not a TOML key, and not part of
    # what a config says (two files that say the same are equal, and print the same).
    source: Path | None = field(default=None, compare=False, repr=False)


_CHOICES = {
    "mailbox.backend": ("maildir", "imap"),
    "mailbox.security": ("ssl", "starttls", "none"),
    "smtp.backend": ("maildir", "smtp"),
    "smtp.security": ("ssl", "starttls", "none"),
    "workflow.default_language": ("en", "de"),
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
    "logging.format": ("text", "json"),
}


def load(path: Path | None, *, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Read and check a config file; None means the embedded default (no file)."""
    env = os.environ if environ is None else environ
    if path is None:
        demo = Config(workflow=WorkflowConfig(partner_domains=DEMO_PARTNER_DOMAINS))
        return _resolve(demo, Path.cwd(), env)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None
    cfg = from_dict(data, base=path.resolve().parent, environ=env)
    return dataclasses.replace(cfg, source=path.resolve())


def from_dict(data: dict[str, Any], *, base: Path, environ: typing.Mapping[str, str]) -> Config:
    sections = {}
    for name, cls in _SECTIONS.items():
        raw = data.pop(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(name, "must be a [section]")
        sections[name] = _build(cls, raw, name)
        if name == "workflow" and "partner_domains" not in raw:
            raise ConfigError("workflow.partner_domains", "is required: the domains whose people may send requests, "
                                                          'e.g. ["partner.example.com"]; ["*"] lets anyone')
    if data:
        raise ConfigError(sorted(data)[0], "unknown section")
    return _resolve(Config(**sections), base, environ)


_SECTIONS: dict[str, type] = {
    "mailbox": MailboxConfig,
    "smtp": SmtpConfig,
    "database": DatabaseConfig,
    "workflow": WorkflowConfig,
    "logging": LoggingConfig,
    "metrics": MetricsConfig,
}


def _build(cls: type, raw: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "password"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{section}.{key}"
        if key not in known:
            raise ConfigError(dotted, "unknown key")
        values[key] = _convert(hints[key], value, dotted)
        choices = _CHOICES.get(dotted)
        if choices and values[key] not in choices:
            raise ConfigError(dotted, f"must be one of {', '.join(choices)}, not {value!r}")
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    try:
        if hint is Duration:
            if not isinstance(value, str):
                raise ValueError(f"must be a duration string like '90d', not {value!r}")
            return Duration(seconds=parse_duration(value).total_seconds())
        if hint is Size:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(f"must be a size like '25MB', not {value!r}")
            return Size(parse_size(value))
        if hint is Path:
            _expect(value, str)
            return Path(value)
        if origin is tuple:
            if not isinstance(value, list):
                raise ValueError(f"must be a list, not {value!r}")
            (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
            return tuple(_convert(item, v, key) for v in value)
        if hint is bool:
            _expect(value, bool)
            return value
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"must be a whole number >= 0, not {value!r}")
            return value
        if hint is str:
            _expect(value, str)
            return value
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    raise ConfigError(key, f"unsupported type {hint!r}")  # a bug in this module, not in the file


def _expect(value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise ValueError(f"must be a {kind.__name__}, not {value!r}")


def _resolve(cfg: Config, base: Path, environ: typing.Mapping[str, str]) -> Config:
    """Make paths absolute, resolve secrets and check what spans several keys."""
    mailbox = _resolve_server(cfg.mailbox, "mailbox", base, environ)
    smtp = _resolve_server(cfg.smtp, "smtp", base, environ)
    database = dataclasses.replace(cfg.database, url=_database_url(cfg.database.url, base))
    if mailbox.backend == "imap":
        _require(mailbox.host, "mailbox.host", "is required with backend = \"imap\"")
        _require(mailbox.username, "mailbox.username", "is required with backend = \"imap\"")
        _one_credential("mailbox", mailbox.password, mailbox.oauth2_token_command)
    if smtp.backend == "smtp":
        _require(smtp.host, "smtp.host", "is required with backend = \"smtp\"")
        if smtp.username:
            _one_credential("smtp", smtp.password, smtp.oauth2_token_command)
    if mailbox.max_attempts < 1:
        raise ConfigError("mailbox.max_attempts", "must be at least 1")
    if mailbox.poll_interval.total_seconds() < 1:
        raise ConfigError("mailbox.poll_interval", "must be at least 1s")
    _from_address(smtp.from_address)
    if cfg.metrics.listen:
        parse_listen(cfg.metrics.listen)
    wf = cfg.workflow
    if wf.check_interval.total_seconds() < 1:
        raise ConfigError("workflow.check_interval", "must be at least 1s")
    if wf.require_dmarc_pass and not wf.trusted_authserv_id:
        raise ConfigError("workflow.trusted_authserv_id", "is required when require_dmarc_pass = true")
    if any(r >= wf.acceptance_window for r in wf.reminders):
        raise ConfigError("workflow.reminders", "each reminder must come before acceptance_window")
    workflow = dataclasses.replace(
        wf,
        partner_domains=_partner_domains(wf.partner_domains),
        reminders=tuple(sorted(set(wf.reminders))),
    )
    log_file = cfg.logging.file and str(base / cfg.logging.file)
    return dataclasses.replace(
        cfg, mailbox=mailbox, smtp=smtp, database=database, workflow=workflow,
        logging=dataclasses.replace(cfg.logging, file=log_file),
    )


_S = typing.TypeVar("_S", bound=ServerConfig)


def _resolve_server(server: _S, section: str, base: Path, environ: typing.Mapping[str, str]) -> _S:
    """The path made absolute, the password read from its variable or file."""
    return dataclasses.replace(server, path=base / server.path,
                               password=_secret(section, server.password_env, server.password_file, base, environ))


def _partner_domains(values: tuple[str, ...]) -> tuple[str, ...]:
    """Lower-case domains (subdomains count), or ("*",) alone: letting anyone submit is said explicitly."""
    domains = tuple(d.strip().lower().lstrip("@") for d in values)
    key = "workflow.partner_domains"
    if not domains:
        raise ConfigError(key, 'is empty: name the domains whose people may send requests, or ["*"] for anyone')
    if ANYONE in domains and len(domains) > 1:
        raise ConfigError(key, '"*" lets anyone submit; it cannot be combined with domains')
    for domain in domains:
        if domain != ANYONE and ("." not in domain or any(c.isspace() or c in "*@/:" for c in domain)):
            raise ConfigError(key, f"{domain!r} is not a domain like partner.example.com")
    return domains


def _secret(section: str, env_name: str, file_name: str, base: Path, environ: typing.Mapping[str, str]) -> Secret | None:
    if env_name and file_name:
        raise ConfigError(f"{section}.password_file", "set password_env or password_file, not both")
    if env_name:
        if env_name not in environ:
            raise ConfigError(f"{section}.password_env", f"environment variable {env_name} is not set")
        return Secret(environ[env_name])
    if file_name:
        try:
            return Secret((base / file_name).read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"{section}.password_file", f"cannot read {exc.filename}: {exc.strerror}") from None
    return None


def _one_credential(section: str, password: Secret | None, token_command: str) -> None:
    if password is None and not token_command:
        raise ConfigError(f"{section}.password_env", "set password_env, password_file or oauth2_token_command")
    if password is not None and token_command:
        raise ConfigError(f"{section}.oauth2_token_command", "use a password or oauth2_token_command, not both")


def _require(value: str, key: str, problem: str) -> None:
    if not value:
        raise ConfigError(key, problem)


def _from_address(value: str) -> None:
    from email.utils import parseaddr

    _, addr = parseaddr(value)
    if "@" not in addr or any(c in value for c in "\r\n"):
        raise ConfigError("smtp.from_address", f"must be an address like 'Smart Accounts <sa@example.com>', not {value!r}")


def public_url(url: str) -> str:
    """A database URL fit for the log: without its password, in the userinfo or as a parameter."""
    if url.startswith("sqlite:"):
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.partition(":")[0] + "://…"      # unreadable: say only which kind of database
    netloc = (f"{parts.username}@" if parts.username else "") + (f"[{host}]" if ":" in host else host) \
        + (f":{port}" if port else "")
    query = "&".join(p for p in parts.query.split("&") if p and "pass" not in p.partition("=")[0].lower())
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _database_url(url: str, base: Path) -> str:
    """sqlite:///relative/path is relative to the config file; sqlite:////abs is absolute."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path == ":memory:":
            return url
        return "sqlite:///" + str(base / path)
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise ConfigError("database.url", f"must start with sqlite:/// or postgresql://, not {url!r}")

