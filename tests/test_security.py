"""Safe on the open internet (issue 13; DESIGN §3, §4, §5): no open relay, sender authentication
done right, an hourly cap for every email, codes unreadable at rest, no disguised names.

Each test drives real mail through the daemon (Maildir in, Maildir out, SQLite or
PostgreSQL) and reads what users and admins see: the emails, the rows, the log.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import stat
from email.message import EmailMessage
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon import log
from daemon.app import build
from daemon.clock import FixedClock
from models.outbox import redacted
from e2e import Install, good_fields, reply, request_email

OURS = "smart-accounts@example.com"
MX = "mx.smartacct.example"
PARTNER = "paula@partner.example"
DMARC = f'[workflow]\nrequire_dmarc_pass = true\ntrusted_authserv_id = "{MX}"\n'


def authenticated(msg: EmailMessage, *results: str) -> EmailMessage:
    """Authentication-Results as receiving servers prepend them: the first given ends up on top."""
    for value in reversed(results):
        headers = [(k, v) for k, v in msg.items()]
        for k in list(msg.keys()):
            del msg[k]
        msg["Authentication-Results"] = value
        for k, v in headers:
            msg[k] = v
    return msg


def refused(install: Install, reason: str) -> bool:
    return bool(re.search(rf"WARNING message\.refused (ref=SA-\d+ )?reason={reason}", install.log()))


# --- who may submit, and as whom -------------------------------------------------------------------

def test_a_stranger_cannot_use_us_to_mail_a_phishing_note_to_a_customer(install: Install) -> None:
    """The issue's open relay: with the required partner_domains, a stranger's request reaches no one."""
    fields = good_fields("bigcorp.example", customer_email="ceo@bigcorp.example",
                         note_to_customer="URGENT: verify your account at https://bigc0rp-login.example")
    install.drop(request_email(fields, sender="stranger@elsewhere.example"))
    install.run_once()
    assert install.sent() == [] and install.requests() == []
    assert "message.ignored reason=outsider" in install.log()


def test_two_from_addresses_are_refused_and_never_answered(install: Install) -> None:
    msg = request_email(good_fields(), sender=PARTNER)
    msg.replace_header("From", f"{PARTNER}, mallory@evil.example")
    name = install.drop(msg)
    install.run_once()
    assert install.sent() == [] and install.requests() == [] and install.folder_of(name) == "Rejected"
    assert refused(install, "from_not_one_address")


@pytest.mark.parametrize("case", ["no results", "fail on top of a forged pass", "pass for another domain",
                                  "pass from an untrusted server"])
def test_with_require_dmarc_pass_an_unauthenticated_request_is_refused(install: Install, case: str) -> None:
    install.write_config(DMARC)
    msg = request_email(good_fields())
    if case == "fail on top of a forged pass":
        authenticated(msg, f"{MX}; dmarc=fail header.from=partner.example",
                      f"{MX}; dmarc=pass header.from=partner.example")
    elif case == "pass for another domain":
        authenticated(msg, f"{MX}; dmarc=pass header.from=evil.example")
    elif case == "pass from an untrusted server":
        authenticated(msg, f"mx.evil.example; dmarc=pass header.from=partner.example")
    install.drop(msg)
    install.run_once()
    assert install.sent() == [] and install.requests() == [] and refused(install, "dmarc")


def test_with_require_dmarc_pass_an_aligned_pass_submits_and_replies(install: Install) -> None:
    install.write_config(DMARC)
    install.drop(authenticated(request_email(good_fields()), f"{MX}; dmarc=pass header.from=partner.example"))
    install.run_once()
    [review] = install.new_sent()
    install.drop(reply(review, "CONFIRM"))                   # no Authentication-Results: refused
    install.run_once()
    assert install.new_sent() == [] and refused(install, "dmarc")
    assert install.requests()[0]["state"] == "awaiting_confirmation"
    install.drop(authenticated(reply(review, "CONFIRM"), f"{MX}; dmarc=pass header.from=partner.example"))
    install.run_once()
    assert install.requests()[0]["state"] == "pending_acceptance"


# --- the hourly cap ------------------------------------------------------------------------------------

def run_at(install: Install, clock: FixedClock) -> None:
    cfg = config_mod.load(install.config)
    log.setup(cfg.logging.level, cfg.logging.format, cfg.logging.file)
    app = build(cfg, clock=clock)
    try:
        app.loop.run(once=True)
    finally:
        app.close()


@pytest.mark.both_databases
def test_reviews_over_the_hourly_cap_are_delayed_never_lost(install: Install) -> None:
    """1,000 forms from one partner once made 1,000 reviews in 27 s; now at most the cap per hour."""
    install.write_config("[workflow]\nmax_emails_per_address_per_hour = 5\n")
    for n in range(12):
        install.drop(request_email(good_fields(f"d{n}.example", account_name=f"Company {n}")))
    clock = FixedClock()
    run_at(install, clock)
    assert len(install.new_sent()) == 5
    assert re.search(rf"WARNING email\.delayed to={re.escape(PARTNER)} emails=7 until=\S+ reason=hourly_cap cap=5",
                     install.log())
    clock.advance(dt.timedelta(minutes=59))
    run_at(install, clock)
    assert install.new_sent() == []                          # still within the hour of the first five
    clock.advance(dt.timedelta(minutes=2))
    run_at(install, clock)
    assert len(install.new_sent()) == 5
    clock.advance(dt.timedelta(hours=1, minutes=1))
    run_at(install, clock)
    assert len(install.new_sent()) == 2
    assert len({s.subject for s in install.sent()}) == 12 and all(s.to == PARTNER for s in install.sent())


# --- codes unreadable at rest ------------------------------------------------------------------------

@pytest.mark.both_databases
def test_no_code_or_code_bearing_message_id_is_readable_at_rest_or_in_output(install: Install) -> None:
    install.drop(request_email(good_fields()))
    install.run_once()
    [review] = install.sent()
    token = review.token
    message_id = str(review.msg["Message-ID"]).strip("<>")
    assert token and token not in message_id                 # our Message-IDs carry no code
    secrets = (token, message_id.split("@")[0])
    # A reply that names only our Message-ID (the server dropped the plus-address, the footer was cut).
    answer = reply(review, "CONFIRM", to=OURS)
    answer.set_content("CONFIRM\n\nThanks, Paula\n")
    install.drop(answer)
    install.run_once()
    assert install.requests()[0]["state"] == "pending_acceptance"
    # Our own email come back: its Message-ID is masked in the log and the database.
    install.drop(review.path.read_bytes().split(b"\r\n", 2)[2])
    install.run_once()

    stored = b"".join(bytes(b) for (b,) in install.query("SELECT body FROM outbox WHERE state = 'sent'"))
    columns = repr(install.query("SELECT * FROM incoming_message")) + repr(install.query("SELECT * FROM reply_token"))
    outputs = [install.cli("outbox", "list", "--json").stdout, install.cli("outbox", "list").stdout,
               install.cli("requests", "show", "SA-000001", "--json").stdout, install.log(),
               *(install.cli("outbox", "show", str(row["id"])).stdout
                 for row in json.loads(install.cli("outbox", "list", "--json").stdout))]
    for secret in secrets:
        assert secret.encode() not in stored and secret not in columns, secret
        assert not any(secret in text for text in outputs), secret
    assert b"[redacted]" in stored


def test_a_stored_copy_masks_a_code_wherever_quoted_printable_broke_its_line() -> None:
    code, own_id = b"abcdefghijklmnopqrstuvwxyz", b"mnbvcxzlkjhgfdsapoiuytrewq"
    head = (b"From: Smart Accounts <smart-accounts@example.com>\r\nMessage-ID: <" + own_id + b"@example.com>\r\n"
            b"Reply-To: smart-accounts+" + code + b"@example.com>\r\n\r\n")
    lines = [b"Code: " + code[:k] + b"=\r\n" + code[k:] + b" =C2=B7 id " + own_id[:k] + b"=\r\n" + own_id[k:]
             for k in range(1, len(code))]
    stored = redacted(head + b"\r\n".join(lines) + b"\r\nCode: " + code + b"\r\n")
    flat = stored.replace(b"=\r\n", b"")
    assert code not in flat and own_id not in flat
    assert stored.count(b"[redacted]") == 3 + 2 * len(lines)            # the header's three, two a line, the last
    assert stored.split(b"\r\n\r\n")[1].splitlines()[0] == b"Code: [redacted] =C2=B7 id [redacted]"


def test_what_the_daemon_writes_is_readable_by_its_user_only(install: Install) -> None:
    install.run_once()                                      # the daemon makes its folders, not the test
    install.drop(request_email(good_fields()))
    install.run_once()
    made = [install.log_file, install.inbox, install.inbox / "new", install.outbox / "new",
            *(install.outbox / "new").iterdir(), install.inbox / ".Processed" / "cur"]   # filed mail keeps
    # the mode its mail server gave it, inside folders no one else may enter
    if install.database_url is None:
        made += [install.root / "var" / "smartacct.db"]
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path}: {oct(path.stat().st_mode)}"
    assert "UMask=0077" in (Path(__file__).parent.parent / "deploy" / "smartacct.service").read_text()


# --- no disguised names, no floods of echoed text -----------------------------------------------------------

def test_a_name_with_a_direction_override_is_refused_and_the_log_escapes_controls(install: Install) -> None:
    install.drop(request_email(good_fields(account_name="Acme \u202eSoftware"), subject="Hi \u009b31m there"))
    install.run_once()
    [rejection] = install.sent()
    assert "invisible formatting characters" in rejection.text and "\u202e" not in rejection.subject
    assert install.requests()[0]["state"] == "rejected"
    log_text = install.log()
    assert "\u009b" not in log_text and "\u202e" not in log_text


def test_a_rejection_echoes_each_value_cut_short(install: Install) -> None:
    install.drop(request_email(good_fields(account_name="A" * 5_000, note_to_customer="n" * 200_000)))
    install.run_once()
    [rejection] = install.sent()
    raw = rejection.path.read_bytes()
    assert len(raw) < 40_000 and "A" * 199 + "…" in rejection.text and "A" * 201 not in rejection.text


def test_outbox_list_json_names_no_message_id(install: Install) -> None:
    install.drop(request_email(good_fields()))
    install.run_once()
    [row] = json.loads(install.cli("outbox", "list", "--json").stdout)
    assert "message_id" not in row and row["kind"] == "review"


# --- the invariant, for senders and headers nobody thought of ---------------------------------------

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from daemon.config import WorkflowConfig  # noqa: E402
from daemon.core.decide import Facts, TokenFact, decide  # noqa: E402
from models.outbox import message_id_hash  # noqa: E402
from parsers import classify as cl  # noqa: E402
from parsers.message import parse_message  # noqa: E402
from test_decide import NOW, PENDING, Req, Tok  # noqa: E402

TOKEN = "k" * 26
OTHER_TOKEN = "m" * 26
OUR_ID = "q" * 26 + "@example.com"
CUSTOMER = "carla@acme.example"
SENDERS = [PARTNER, CUSTOMER, PARTNER.upper(), f"Paula <{PARTNER}>", "mallory@partner.example",
           "evil@elsewhere.example", f"{PARTNER}, mallory@evil.example", f'"{PARTNER}" <evil@elsewhere.example>',
           f"{CUSTOMER}, {PARTNER}", "carla@ACME.example", "<>", ""]
RESULTS = [f"{MX}; dmarc=pass header.from=partner.example", f"{MX}; dmarc=pass header.from=acme.example",
           f"{MX}; dmarc=pass header.from=evil.example", f"{MX}; dmarc=fail header.from=partner.example",
           "mx.evil.example; dmarc=pass header.from=partner.example", f"{MX.upper()}; dmarc=pass",
           f"{MX}; dmarc=pass (comment (nested)) header.from=partner.example", "garbage;;;", f"{MX};"]
WORDS = ["CONFIRM", "ACCEPT", "DECLINE", "CANCEL", "STATUS", "HELP", "accept.", "Bestätigen!", "ACCEPT?",
         "Yes", "", "I do not accept"]


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    count = draw(st.sampled_from([1, 1, 1, 1, 1, 0, 2]))          # mostly one From, as the invariant's edge
    froms = [draw(st.sampled_from([PARTNER, CUSTOMER, *SENDERS])) for _ in range(count)]
    sender_header = draw(st.sampled_from(["", "Sender: evil@elsewhere.example\r\n", f"Sender: {PARTNER}\r\n"]))
    to = draw(st.sampled_from([f"smart-accounts+{TOKEN}@example.com", f"smart-accounts+{TOKEN}@example.com",
                               f"smart-accounts+{OTHER_TOKEN}@example.com",
                               OURS, f"evil+{TOKEN}@elsewhere.example"]))
    threading = draw(st.sampled_from(["", f"In-Reply-To: <{OUR_ID}>\r\n", f"In-Reply-To: <{OUR_ID}>\r\n",
                                      f"References: <x@y> <{OUR_ID}>\r\n",
                                      f"In-Reply-To: <{TOKEN}@elsewhere.example>\r\n"]))
    results = draw(st.lists(st.sampled_from([*RESULTS[:2], *RESULTS]), max_size=3))
    word = draw(st.sampled_from(["CONFIRM", "ACCEPT", *WORDS]))
    footer = draw(st.sampled_from(["", f"> Ref: SA-000042 · Code: {TOKEN}", f"> Ref: SA-000042 · Code: {OTHER_TOKEN}",
                                   f"My code is {TOKEN}"]))
    head = "".join(f"Authentication-Results: {r}\r\n" for r in results)
    head += "".join(f"From: {f}\r\n" for f in froms) + sender_header
    head += f"To: {to}\r\nSubject: Re: [SA-000042] Please review\r\nMessage-ID: <r1@partner.example>\r\n" + threading
    return f"{head}\r\n{word}\r\n\r\n{footer}\r\n".encode(), draw(st.sampled_from([False, False, True]))


def aligned_pass(raw: bytes, sender: str) -> bool:
    """Independently of the parser: the topmost Authentication-Results of MX passes for the From domain."""
    lines = [line[len(b"Authentication-Results: "):].decode() for line in raw.split(b"\r\n")
             if line.startswith(b"Authentication-Results: ")]
    ours = next((v for v in lines if v.split(";")[0].strip().lower() == MX), None)
    return ours is not None and "dmarc=pass" in ours and f"header.from={sender.rpartition('@')[2]}" in ours.lower()


@settings(max_examples=1500, deadline=None)
@given(message=messages(), state=st.sampled_from(["awaiting_confirmation", "pending_acceptance", "active"]),
       used=st.sampled_from([False, False, False, True]))
def test_nothing_acts_unless_the_right_party_with_one_from_address_carries_a_live_token(
        message: tuple[bytes, bool], state: str, used: bool) -> None:
    raw, require_dmarc = message
    wf = WorkflowConfig(partner_domains=("partner.example",), require_dmarc_pass=require_dmarc,
                        trusted_authserv_id=MX)
    partner_token = Tok(id=1, party="partner", actions="CONFIRM CANCEL", issued_for_state=state,
                        used_at=NOW if used else None)
    customer_token = Tok(id=2, party="customer", actions="ACCEPT DECLINE", issued_for_state=state)
    req = Req(state=state) if state != "pending_acceptance" else PENDING
    # The database: TOKEN belongs to the partner, OUR_ID to the customer's activation email.
    by_token, by_id = {TOKEN: partner_token}, {message_id_hash(OUR_ID): customer_token}
    msg = parse_message(raw)
    intent = cl.classify(msg, partner_domains=wf.partner_domains, own_address=OURS,
                         dmarc_authserv_id=MX if require_dmarc else None)
    found: list[TokenFact] = []
    if isinstance(intent, cl.Reply):
        found += [TokenFact(by_token[t], req) for t in intent.tokens if t in by_token]
        found += [TokenFact(by_id[message_id_hash(i)], req) for i in intent.thread_ids
                  if message_id_hash(i) in by_id]
    decision = decide(intent, Facts(msg, tokens=found), NOW, wf)
    event(f"{type(intent).__name__}: {'acted' if decision.token is not None else 'no action'}")
    if decision.update is None and decision.token is None:
        return
    token = decision.token
    assert token is not None and token in [f.token for f in found]
    assert token.used_at is None and token.issued_for_state == req.state
    assert msg.from_count == 1 and msg.sender is not None
    expected = req.partner_email if token.party == "partner" else req.customer_email
    assert msg.sender.lower() == expected.lower()
    if require_dmarc:
        assert aligned_pass(raw, msg.sender)
