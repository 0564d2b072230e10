"""Config loading: every key of DESIGN §5, typed and checked, errors naming the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from daemon import config
from daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str, **env: str) -> config.Config:
    """`text` as a config file; with partner_domains (required) added when it does not say them."""
    if "partner_domains" not in text:
        domains = 'partner_domains = ["partner.example"]\n'
        text = text.replace("[workflow]\n", "[workflow]\n" + domains) if "[workflow]" in text \
            else text + "\n[workflow]\n" + domains
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path, environ=env)


def test_the_example_documents_exactly_the_defaults() -> None:
    assert config.load(ROOT / "config.example.toml", environ={}) == config.load(None, environ={})


def test_durations_and_sizes() -> None:
    assert config.parse_duration("90d") == dt.timedelta(days=90)
    assert config.parse_duration("12h") == dt.timedelta(hours=12)
    assert config.parse_duration("45s") == dt.timedelta(seconds=45)
    assert config.parse_size("25MB") == 25_000_000
    with pytest.raises(ValueError):
        config.parse_duration("soon")


def test_values_are_typed(tmp_path: Path) -> None:
    cfg = load(tmp_path, '[workflow]\nreminders = ["2s", "1s"]\nacceptance_window = "5s"\n'
                         'partner_domains = ["Partner.Example"]\n[mailbox]\nmax_message_size = "1MB"\n')
    assert cfg.workflow.reminders == (dt.timedelta(seconds=1), dt.timedelta(seconds=2))
    assert cfg.workflow.partner_domains == ("partner.example",)
    assert cfg.mailbox.max_message_size == 1_000_000
    assert cfg.mailbox.path == tmp_path / "var" / "inbox"
    assert cfg.database.url == f"sqlite:///{tmp_path}/var/smartacct.db"


@pytest.mark.parametrize("text, key", [
    ("[workflow]\nreview_window = 14\n", "workflow.review_window"),
    ("[workflow]\nnope = 1\n", "workflow.nope"),
    ("[nope]\n", "nope"),
    ('[smtp]\nsecurity = "tls"\n', "smtp.security"),
    ('[database]\nurl = "mysql://x"\n', "database.url"),
    ('[mailbox]\nbackend = "imap"\nhost = "h"\nusername = "u"\n', "mailbox.password_env"),
    ('[mailbox]\npassword_env = "MISSING"\n', "mailbox.password_env"),
    ('[workflow]\nrequire_dmarc_pass = true\n', "workflow.trusted_authserv_id"),
    ('[workflow]\nreminders = ["91d"]\n', "workflow.reminders"),
    ('[smtp]\nfrom_address = "nobody"\n', "smtp.from_address"),
])
def test_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == key


@pytest.mark.parametrize("domains, problem", [
    (None, "is required"),
    ("[]", "is empty"),
    ('["*", "partner.example"]', "cannot be combined"),
    ('["partner"]', "not a domain"),
])
def test_partner_domains_are_required_and_anyone_is_said_explicitly(tmp_path: Path, domains: str | None,
                                                                   problem: str) -> None:
    """DESIGN §5: no open relay by default; the embedded demo knows the examples' partner domain."""
    path = tmp_path / "c.toml"
    path.write_text("[workflow]\nreview_window = \"14d\"\n" + (f"partner_domains = {domains}\n" if domains else ""))
    with pytest.raises(ConfigError) as err:
        config.load(path, environ={})
    assert err.value.key == "workflow.partner_domains" and problem in err.value.problem
    assert load(tmp_path, '[workflow]\npartner_domains = ["*"]\n').workflow.partner_domains == ("*",)
    assert config.load(None, environ={}).workflow.partner_domains == ("partner.example",)


def test_secrets_resolve_at_load_and_never_print(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = load(tmp_path, '[mailbox]\nbackend = "imap"\nhost = "h"\nusername = "u"\npassword_file = "pw"\n'
                         '[smtp]\nbackend = "smtp"\nhost = "h"\nusername = "u"\npassword_env = "PW"\n', PW="other")
    assert cfg.mailbox.password == "s3cret" and cfg.smtp.password == "other"
    assert "s3cret" not in repr(cfg) and "other" not in repr(cfg)


@pytest.mark.parametrize("listen", [
    "9108",                  # a port alone: run would have nothing to bind it to
    "localhost",
    "127.0.0.1:",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:91o8",
    "127.0.0.1:٩١٠٨",        # Arabic-Indic digits: int() takes them, a port is ASCII
    "::1:9108",              # IPv6 without brackets
    "[not-v6]:9108",
    "my host:9108",
])
def test_a_metrics_listen_that_run_would_refuse_is_a_config_error(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, f'[metrics]\nlisten = "{listen}"\n')
    assert err.value.key == "metrics.listen" and err.value.exit_code == 2


@pytest.mark.parametrize("listen, bound", [
    ("127.0.0.1:9108", ("127.0.0.1", 9108)),
    (" 127.0.0.1:9108 ", ("127.0.0.1", 9108)),
    (":9108", ("0.0.0.0", 9108)),
    ("[::1]:9108", ("::1", 9108)),
    ("metrics.internal:9108", ("metrics.internal", 9108)),
])
def test_metrics_listen_is_parsed_once_for_load_and_run(tmp_path: Path, listen: str, bound: tuple[str, int]) -> None:
    assert load(tmp_path, f'[metrics]\nlisten = "{listen}"\n').metrics.listen == listen
    assert config.parse_listen(listen) == bound   # what `run` binds (daemon.ops.metrics.serve)


def test_the_production_example_has_absolute_paths_and_loads(tmp_path: Path) -> None:
    """deploy/config.production.toml, copied anywhere, points at /var/lib/smartacct, not beside itself."""
    copy = tmp_path / "config.toml"
    copy.write_text((ROOT / "deploy" / "config.production.toml").read_text())
    cfg = config.load(copy, environ={"SMARTACCT_IMAP_PASSWORD": "i", "SMARTACCT_SMTP_PASSWORD": "s"})
    assert cfg.database.url == "sqlite:////var/lib/smartacct/smartacct.db"
    assert cfg.logging.file == "/var/log/smartacct/smartacct.log"
    assert cfg.mailbox.backend == "imap" and cfg.mailbox.password == "i"
    assert cfg.smtp.backend == "smtp" and cfg.smtp.password == "s"
    assert str(tmp_path) not in repr(cfg)
    with pytest.raises(ConfigError) as err:
        config.load(copy, environ={})
    assert err.value.key == "mailbox.password_env"
