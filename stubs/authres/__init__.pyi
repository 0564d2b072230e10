# The core feature set only (authres.AuthenticationResultsHeader.parse, RFC 8601).

class AuthResError(Exception): ...

class QuotableValue(str): ...

class AuthenticationResultProperty:
    type: str
    name: str
    value: QuotableValue | None
    comment: str | None

class AuthenticationResult:
    method: str
    version: str | None
    result: str
    properties: list[AuthenticationResultProperty]

class AuthenticationResultsHeader:
    authserv_id: str | None
    results: list[AuthenticationResult]
    @classmethod
    def parse(cls, string: str) -> AuthenticationResultsHeader: ...
