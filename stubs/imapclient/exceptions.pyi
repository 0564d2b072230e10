import imaplib

# imapclient renames imaplib's exceptions, so both libraries' errors are caught by one name.
IMAPClientError = imaplib.IMAP4.error
IMAPClientAbortError = imaplib.IMAP4.abort

class LoginError(IMAPClientError): ...
