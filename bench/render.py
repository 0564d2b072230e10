"""Render CPU per email (issue 16): Renderer.compose against the stdlib's own way of composing, in one run.

In one process, no servers: Renderer.compose of N review emails as ingest queues them
(threaded to the request, a reply token, CONFIRM/CANCEL one-click answers), and the part
of it that is Jinja2 (Renderer._render). Baseline in the same run, on the same rendered
text and HTML: the stdlib email package composing and serialising the two-part reply the
plain way (EmailMessage, policy.SMTP, set_content + add_alternative, as_bytes), as the
floor in bench/floor.py does. CPU time (time.process_time), best of --repeat rounds.

    .venv/bin/python bench/render.py                # 2,000 emails, 5 rounds
    .venv/bin/python bench/render.py --profile      # plus a cProfile of compose
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import header, table, top_lines  # noqa: E402

from daemon.mail.render import Renderer  # noqa: E402

FROM = "Smart Accounts <smart-accounts@example.com>"
UTC = dt.timezone.utc
TOKEN = "abcdefghijklmnopqrstuvwxyz"


def review_request(i: int) -> SimpleNamespace:
    domain = f"r{i:06d}.example"
    return SimpleNamespace(
        ref=f"SA-{i:06d}", account_name=f"Account r {i}", account_domain=domain, customer_email=f"carla@{domain}",
        partner_email=f"partner{i % 50}@partner{i % 50}.example", note_to_customer="Please accept soon.",
        user_emails=[f"dev1@{domain}", f"dev2@{domain}"], note_to_users="Licences are under Inventory.",
        language="en", state="awaiting_confirmation", created_at=dt.datetime(2026, 11, 24, 9, tzinfo=UTC),
        review_expires_at=dt.datetime(2026, 12, 8, 9, tzinfo=UTC), confirmed_at=None, expires_at=None,
        accepted_at=None, closed_at=None)


def compose_args(i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    req = review_request(i)
    return (("review", "en", {"ref": req.ref, "request": req}),
            {"to": [req.partner_email], "message_id": f"m{i:024d}@example.com",
             "date": dt.datetime(2026, 11, 24, 10, tzinfo=UTC), "in_reply_to": f"<r-{i}@partner.example>",
             "references": (), "token": TOKEN, "actions": ("CONFIRM", "CANCEL"), "auto_submitted": "auto-replied"})


def stdlib_compose(renderer: Renderer, i: int) -> bytes:
    """The same email built the plain stdlib way: what the floor pays for composing."""
    (kind, lang, ctx), kw = compose_args(i)
    subject, text, html = renderer._render(kind, lang, ctx, kw["token"], kw["actions"])
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = FROM
    msg["To"] = ", ".join(kw["to"])
    msg["Subject"] = subject
    msg["Date"] = format_datetime(kw["date"])
    msg["Message-ID"] = f"<{kw['message_id']}>"
    msg["In-Reply-To"] = kw["in_reply_to"]
    msg["References"] = kw["in_reply_to"]
    msg["Reply-To"] = renderer.reply_address(kw["token"])
    msg["Auto-Submitted"] = kw["auto_submitted"]
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    msg["Content-Language"] = lang
    return msg.as_bytes()


def cpu_per_call(fn: Callable[[int], Any], n: int, repeat: int) -> float:
    """Best of `repeat` rounds of n calls: CPU seconds per call (the least disturbed round on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - started) / n)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="emails per round (default 2000)")
    ap.add_argument("--repeat", type=int, default=5, help="rounds; the best is reported")
    ap.add_argument("--profile", action="store_true", help="also cProfile N composes")
    args = ap.parse_args()
    header("Render: Renderer.compose vs the stdlib's EmailMessage, CPU per email", n=args.n, repeat=args.repeat)
    renderer = Renderer(FROM)
    renderer.precompile()

    def compose(i: int) -> bytes:
        a, kw = compose_args(i)
        return renderer.compose(*a, **kw).raw

    def jinja(i: int) -> Any:
        (kind, lang, ctx), kw = compose_args(i)
        return renderer._render(kind, lang, ctx, kw["token"], kw["actions"])

    for fn in (compose, jinja, lambda i: stdlib_compose(renderer, i)):     # warm up
        fn(0)
    total = cpu_per_call(compose, args.n, args.repeat)
    templates = cpu_per_call(jinja, args.n, args.repeat)
    stdlib = cpu_per_call(lambda i: stdlib_compose(renderer, i), args.n, args.repeat)
    rows = [
        ("Renderer.compose (whole)", 1000 * total, ""),
        ("  of which Jinja2 (Renderer._render)", 1000 * templates, ""),
        ("  of which MIME assembly", 1000 * (total - templates), ""),
        ("baseline: Jinja2 + stdlib EmailMessage (policy.SMTP)", 1000 * stdlib, ""),
        ("  of which the stdlib's MIME assembly", 1000 * (stdlib - templates), ""),
    ]
    print(table(["review email, en, threaded, token, 2 one-click answers", "CPU ms per email", ""],
                [r[:2] + (r[2],) for r in rows], "Render CPU per email (best round)"))
    print(f"\nMIME assembly: compose {1000 * (total - templates):.3f} ms vs the stdlib "
          f"{1000 * (stdlib - templates):.3f} ms ({(stdlib - templates) / max(total - templates, 1e-9):.1f}x); "
          f"whole compose {total / stdlib:.2f} of the baseline")
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.n):
            compose(i)
        prof.disable()
        print(f"\n### cProfile of {args.n} composes, top 25 by own time\n\n```\n"
              f"{top_lines(pstats.Stats(prof), 'tottime', 25)}\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
