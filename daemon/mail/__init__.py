"""The mail adapters: where mail comes in, where it goes out, and how our emails are written.
Library errors end here, translated into daemon.errors types.

    mailbox.py    the Mailbox protocol and InboxMessage
    maildir.py    MaildirMailbox and MaildirTransport (folders on disk)
    imap/         ImapMailbox, composed of small pieces (see its docstring)
    transport.py  the Transport protocol
    smtp.py       SmtpTransport: one session per outbox drain
    connect.py    socket and TLS errors in words, for IMAP and SMTP alike
    backoff.py    the one backoff formula: IMAP reconnects, SessionBackoff
    oauth2.py     XOAUTH2: the admin's token command
    render.py     one Jinja2 Environment: finished message bytes
"""
