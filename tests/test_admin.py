"""The admin commands of DESIGN §6, run as a user runs them (through the CLI's entry point): what
each changes in the database, the emails that go out, the folders, and the log line it leaves."""

from __future__ import annotations

import email.policy
import json
import re
import sqlite3
from pathlib import Path

import pytest

from e2e import OUR_ADDRESS, Install, Sent, as_sent, good_fields, reply, request_email, table
from servers import Dovecot, SmtpRelay

PARTNER = "paula@partner.example"
CUSTOMER = "carla@acme.example"
POISON = "poison@partner.example"


def submit(install: Install, sender: str = PARTNER, **fields: str) -> Sent:
    install.drop(request_email(good_fields(**fields), sender=sender))
    install.run_once()
    [review] = install.new_sent()
    return review


def sql(install: Install, statement: str) -> None:
    """DDL on the installation's database, whichever it is."""
    if install.database_url:
        import psycopg

        with psycopg.connect(install.database_url, autocommit=True) as conn:
            conn.execute(statement)  # type: ignore[arg-type]
    else:
        with sqlite3.connect(install.root / "var" / "smartacct.db") as db:
            db.executescript(statement)


def poison(install: Install) -> None:
    """A real per-message failure: the database refuses any email to POISON (an admin can fix it)."""
    if install.database_url:
        sql(install, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     f"IF NEW.recipient = '{POISON}' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$; "
                     "CREATE TRIGGER poison BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION poison();")
    else:
        sql(install, f"CREATE TRIGGER poison BEFORE INSERT ON outbox WHEN NEW.recipient = '{POISON}' "
                     "BEGIN SELECT RAISE(ABORT, 'poisoned'); END;")


def cure(install: Install) -> None:
    sql(install, "DROP TRIGGER poison ON outbox; DROP FUNCTION poison();" if install.database_url
                 else "DROP TRIGGER poison;")


def fails(install: Install, *args: str) -> str:
    proc = install.cli(*args, check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stderr


# --- requests cancel ------------------------------------------------------------------------------

@pytest.mark.both_databases
def test_an_admin_cancels_a_pending_request_and_both_parties_are_told(install: Install) -> None:
    review = submit(install)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    assert len(install.new_sent()) == 2

    out = install.cli("requests", "cancel", "SA-000001", "--reason", "The customer asked us by phone.").stdout
    assert "SA-000001" in out and "cancelled" in out

    assert install.requests()[0]["state"] == "cancelled"
    assert install.requests()[0]["closed_at"] is not None
    sent = {s.to: s for s in install.new_sent()}
    assert set(sent) == {PARTNER, CUSTOMER}
    assert "Our administrators have cancelled your Smart Account request SA-000001" in sent[PARTNER].text
    assert "The customer asked us by phone." in sent[PARTNER].text
    assert "Our administrators have cancelled" in sent[CUSTOMER].text
    assert all("[SA-000001]" in s.subject for s in sent.values())
    assert re.search(r"INFO request\.cancelled ref=SA-000001 state=cancelled by=admin "
                     r"reason=\"The customer asked us by phone\.\"", install.log())
    timeline = install.show("SA-000001")["events"]
    assert {"name": "request.cancelled", "by": "admin", "reason": "The customer asked us by phone."}.items() \
        <= next(e for e in timeline if e["name"] == "request.cancelled").items()

    # The customer's old activation email no longer works.
    activation = next(s for s in install.sent() if s.to == CUSTOMER and "ACCEPT" in s.text)
    install.drop(reply(activation, "ACCEPT"))
    install.run_once()
    assert install.requests()[0]["state"] == "cancelled"


def test_cancelling_before_confirmation_tells_only_the_partner(install: Install) -> None:
    submit(install)
    install.cli("requests", "cancel", "SA-000001")
    [told] = install.new_sent()
    assert told.to == PARTNER and "Our administrators have cancelled" in told.text
    assert install.requests()[0]["state"] == "cancelled"
    line = next(li for li in install.log().splitlines() if "request.cancelled" in li)
    assert "by=admin" in line and "reason=" not in line


@pytest.mark.both_databases
def test_cancel_refuses_closed_and_unknown_requests(install: Install) -> None:
    submit(install)
    install.cli("requests", "cancel", "SA-000001")
    install.new_sent()

    error = fails(install, "requests", "cancel", "SA-000001")
    assert "SA-000001 is cancelled" in error and "only an open request" in error
    assert "no request SA-000042" in fails(install, "requests", "cancel", "SA-000042")
    proc = install.cli("requests", "cancel", "hello", check=False)
    assert proc.returncode == 2 and "'hello' is not a request reference" in proc.stderr   # a usage error
    assert install.new_sent() == []
    assert install.log().count("request.cancelled") == 1


# --- outbox list / retry ---------------------------------------------------------------------------

@pytest.fixture
def relayed(tmp_path: Path, dovecot: Dovecot, smtp_server: SmtpRelay, database_url: str | None) -> Install:
    """Inbox on a Maildir, outgoing mail through a real SMTP server that delivers into Dovecot."""
    for user in (PARTNER, CUSTOMER):
        dovecot.add_user(user)
    return Install(tmp_path, database_url=database_url, backends=(
        '[mailbox]\nbackend = "maildir"\npath = "var/inbox"\n'
        f'[smtp]\nbackend = "smtp"\nhost = "{smtp_server.host}"\nport = {smtp_server.port}\nsecurity = "none"\n'
        f'from_address = "Smart Accounts <{OUR_ADDRESS}>"\n'))


def outbox(install: Install, *args: str) -> list[dict[str, object]]:
    return json.loads(install.cli("outbox", "list", "--json", *args).stdout)  # type: ignore[no-any-return]


@pytest.mark.both_databases
def test_a_failed_email_is_listed_and_sent_after_retry(relayed: Install, dovecot: Dovecot,
                                                       smtp_server: SmtpRelay) -> None:
    smtp_server.refuse(PARTNER, 550, "5.1.1 mailbox unavailable")
    relayed.drop(request_email(good_fields()))
    relayed.run_once()

    [row] = outbox(relayed)
    assert row["state"] == "failed" and row["kind"] == "review" and row["recipient"] == PARTNER
    assert row["ref"] == "SA-000001" and row["attempts"] == 1 and row["sent_at"] is None
    assert "550" in str(row["last_error"]) and row["created_at"]
    assert outbox(relayed, "--state", "queued") == []
    assert outbox(relayed, "--state", "failed") == [row]
    [listed] = table(relayed.cli("outbox", "list").stdout)
    assert listed["ID"] == str(row["id"]) and listed["REF"] == "SA-000001" and listed["KIND"] == "review"
    assert listed["RECIPIENT"] == PARTNER and listed["STATE"] == "failed" and listed["ATTEMPTS"] == "1"
    assert "550" in listed["LAST ERROR"] and "FILE" not in listed      # no Maildir behind SMTP

    smtp_server.clear()   # the admin has fixed the partner's mailbox
    out = relayed.cli("outbox", "retry", str(row["id"])).stdout
    assert f"#{row['id']}: queued again" in out
    [queued] = outbox(relayed)
    assert queued["state"] == "queued" and queued["attempts"] == 1 and queued["next_try_at"]
    assert re.search(rf"INFO email\.requeued ref=SA-000001 kind=review to={PARTNER} outbox={row['id']} "
                     r"attempts=1 by=admin", relayed.log())

    relayed.run_once()
    [sent] = outbox(relayed)
    assert sent["state"] == "sent" and sent["attempts"] == 2 and sent["last_error"] is None
    [review] = dovecot.wait_for(PARTNER, 1)
    assert b"[SA-000001]" in review

    error = fails(relayed, "outbox", "retry", str(row["id"]), "4242")
    assert f"email #{row['id']} is sent, not failed" in error and "no email #4242" in error
    assert relayed.log().count("email.requeued") == 1


# --- quarantine list / retry -----------------------------------------------------------------------

@pytest.mark.both_databases
def test_a_quarantined_message_is_listed_and_handled_after_retry(install: Install) -> None:
    install.run_once()                # creates the database
    poison(install)
    name = install.drop(request_email(good_fields(), sender=POISON, subject="Please set up Acme"))
    install.run_once()

    assert install.folder_of(name) == "Quarantine"
    log = install.log()
    assert log.count("WARNING message.failed") == 2
    assert re.search(rf"ERROR message\.quarantined key={re.escape(name)} .*sender={POISON} attempts=3 "
                     r"error=\"[^\"]*poisoned", log)
    assert install.requests() == [] and install.sent() == []
    [q] = json.loads(install.cli("quarantine", "list", "--json").stdout)
    assert q["key"] == name and q["sender"] == POISON and q["subject"] == "Please set up Acme"
    assert q["attempts"] == 3 and "poisoned" in q["last_error"] and q["quarantined_at"] and q["message_id"]
    [listed] = table(install.cli("quarantine", "list").stdout)
    assert listed["ID"] == str(q["id"]) and listed["SENDER"] == POISON and listed["ATTEMPTS"] == "3"
    assert listed["SUBJECT"] == "Please set up Acme" and listed["KEY"] == name and "poisoned" in listed["LAST ERROR"]

    cure(install)   # the admin fixed the bug
    out = install.cli("quarantine", "retry", str(q["id"])).stdout
    assert f"#{q['id']}: back in the inbox" in out
    assert install.folder_of(name) == "inbox"
    assert json.loads(install.cli("quarantine", "list", "--json").stdout) == []
    assert re.search(rf"INFO message\.requeued key={re.escape(name)} incoming={q['id']} .*by=admin", install.log())

    install.run_once()
    assert install.folder_of(name) == "Processed"
    [req] = install.requests()
    assert req["state"] == "awaiting_confirmation" and req["partner_email"] == POISON
    [review] = install.new_sent()
    assert review.to == POISON and f"[{req['ref']}]" in review.subject   # PostgreSQL skips the ids rolled back

    error = fails(install, "quarantine", "retry", str(q["id"]), "999")
    assert f"message #{q['id']} is not quarantined (request)" in error and "no incoming message #999" in error


@pytest.mark.both_databases
def test_quarantine_retry_over_imap_moves_the_message_back_to_the_inbox(tmp_path: Path, dovecot: Dovecot,
                                                                       database_url: str | None) -> None:
    shared = OUR_ADDRESS
    dovecot.add_user(shared)
    install = Install(tmp_path, database_url=database_url, backends=(
        f'[mailbox]\nbackend = "imap"\nhost = "{dovecot.host}"\nport = {dovecot.imap_port}\nsecurity = "none"\n'
        f'username = "{shared}"\npassword_env = "IMAP_PASSWORD"\n'
        '[smtp]\nbackend = "maildir"\npath = "var/outbox"\n'))
    install.env["IMAP_PASSWORD"] = "secret"
    install.run_once()
    poison(install)
    with_id = request_email(good_fields(), sender=POISON)
    without_id = request_email(good_fields("beta.example", account_name="Beta Labs"), sender=POISON)
    del without_id["Message-ID"]
    dovecot.deliver_many(shared, [m.as_bytes(policy=email.policy.SMTP) for m in (with_id, without_id)])
    install.run_once()

    assert len(dovecot.messages(shared, "Quarantine")) == 2 and dovecot.messages(shared) == []
    quarantined = json.loads(install.cli("quarantine", "list", "--json").stdout)
    assert sorted(q["message_id"] is None for q in quarantined) == [False, True]

    cure(install)
    install.cli("quarantine", "retry", *(str(q["id"]) for q in quarantined))
    assert len(dovecot.messages(shared)) == 2 and dovecot.messages(shared, "Quarantine") == []
    assert install.log().count("message.requeued") == 2

    install.run_once()
    assert len(dovecot.messages(shared, "Processed")) == 2 and dovecot.messages(shared) == []
    assert sorted(r["account_domain"] for r in install.requests()) == ["acme.example", "beta.example"]
    assert sorted(s.to for s in install.new_sent()) == [POISON, POISON]
    assert "is not quarantined" in fails(install, "quarantine", "retry", str(quarantined[0]["id"]))


# --- outbox show / the Maildir file -----------------------------------------------------------------

NAME = "Müller Robotik — Süd"   # non-ASCII: an encoded-word Subject and a quoted-printable body


def shown(install: Install, email_id: object) -> str:
    return install.cli("outbox", "show", str(email_id)).stdout


def test_outbox_show_is_the_email_as_its_reader_sees_it_without_the_code(install: Install) -> None:
    review = submit(install, account_name=NAME)
    install.drop(reply(review, "CONFIRM"))
    install.run_once()
    rows = {r["kind"]: r for r in outbox(install)}
    sent = {s.to: s for s in install.new_sent()}
    raw = review.path.read_bytes()
    assert b"=E2=80=94" in raw or b"?utf-8?" in raw.lower()          # what `cat` showed the admin

    text = shown(install, rows["review"]["id"])
    head, body = text.split("\n\n", 1)
    names = [line.split(":", 1)[0] for line in head.splitlines()]
    assert names == ["From", "To", "Subject", "Date", "Message-ID", "In-Reply-To", "Reply-To"]
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in head.splitlines()}
    assert fields["In-Reply-To"].endswith("@partner.example>")        # the partner's own id, not ours
    assert fields["From"] == f"Smart Accounts <{OUR_ADDRESS}>" and fields["To"] == PARTNER
    assert fields["Subject"] == review.subject and NAME in fields["Subject"]   # decoded
    assert fields["Message-ID"] == "<[redacted]@example.com>"
    assert fields["Reply-To"] == "smart-accounts+[redacted]@example.com"
    assert f"Account name — {NAME}" in body and body == body.replace("=E2", "")   # the text part, decoded
    assert "<html" not in body.lower() and "<p" not in body and "Content-Type" not in text
    assert "Code: [redacted]" in body and text.endswith("\n")

    # A threaded email names the one it answers (the partner's CONFIRM); nowhere a code or an id of ours.
    threaded = shown(install, rows["request_complete"]["id"])
    assert any(line.startswith("In-Reply-To:") and line.endswith("@partner.example>") for line in threaded.splitlines())
    secrets = {review.token, str(review.msg["Message-ID"]).strip("<>").split("@")[0],
               sent[CUSTOMER].token, str(sent[CUSTOMER].msg["Message-ID"]).strip("<>").split("@")[0]}
    for row in rows.values():
        out = shown(install, row["id"])
        assert not any(secret and secret in out for secret in secrets), row["kind"]

    proc = install.cli("outbox", "show", "4242", check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("smartacct: no email #4242 in the outbox")


def test_outbox_show_masks_the_code_of_an_email_still_queued(tmp_path: Path) -> None:
    """A queued email is stored whole (its code must still work once sent): show masks it itself."""
    install = Install(tmp_path, backends='[mailbox]\nbackend = "maildir"\npath = "var/inbox"\n'
                                         '[smtp]\nbackend = "maildir"\npath = "/proc/smartacct-outbox"\n')
    install.drop(request_email(good_fields(account_name=NAME)))
    install.run_once()
    [row] = outbox(install)
    assert row["state"] == "queued" and row["file"] is None
    [(body,)] = install.query("SELECT body FROM outbox")
    stored = as_sent(bytes(body))
    assert stored.token and stored.token.encode() in bytes(body)    # the live code, at rest until sent
    text = shown(install, row["id"])
    assert stored.token not in text and "Code: [redacted]" in text and NAME in text
    assert str(stored.msg["Message-ID"]).strip("<>").split("@")[0] not in text


def test_outbox_list_names_the_maildir_file_each_email_became(install: Install) -> None:
    submit(install)
    [row] = outbox(install)
    files = [p.name for p in (install.outbox / "new").iterdir()]
    assert row["file"] in files and len(files) == 1
    [listed] = table(install.cli("outbox", "list").stdout)
    assert listed["FILE"] == row["file"] and listed["STATE"] == "sent" and listed["LAST ERROR"] == "-"
    assert list(listed) == ["ID", "REF", "KIND", "RECIPIENT", "STATE", "ATTEMPTS", "CREATED", "FILE", "LAST ERROR"]
