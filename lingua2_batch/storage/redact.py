"""Secrets never leave the process: every URI that goes into a file, a log line, an error or stdout passes
through here first. A URI loses its userinfo (``s3://KEY:SECRET@bucket``) and its query string (presigned
URLs carry ``X-Amz-Signature``, ``X-Amz-Security-Token``, ``AWSAccessKeyId``, ``Signature``); free text
(an exception message from botocore, say) has every known secret value replaced."""

from __future__ import annotations

import os
import re
from typing import Iterable
from urllib.parse import parse_qsl, urlsplit

REDACTED = "<redacted>"
# environment variables whose values are credentials wherever they appear in a message
SECRET_ENVIRONMENT = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "GOOGLE_APPLICATION_CREDENTIALS",
                      "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "HF_TOKEN")
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
_SIGNED_PARAMETER = re.compile(r"(?i)((?:x-amz-[a-z-]+|signature|awsaccesskeyid|sig|token|key)=)[^&\s'\"]+")


def redact_uri(uri: str) -> str:
    """``uri`` without userinfo and without a query string (``?<redacted>`` marks that there was one)."""
    if not isinstance(uri, str):
        return uri
    text = _USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", uri)
    if "://" in text and "?" in text:
        text = text.split("?", 1)[0] + "?" + REDACTED
    return text


def uri_secrets(uri: str) -> list[str]:
    """The secret pieces of one URI: userinfo parts and every query value."""
    if not isinstance(uri, str) or "://" not in uri:
        return []
    secrets: list[str] = []
    match = _USERINFO.search(uri)
    if match:
        secrets += [part for part in re.split(r"[:]", match.group("userinfo")) if part]
        secrets.append(match.group("userinfo"))
    query = urlsplit(uri).query
    if query:
        secrets.append(query)
        secrets += [value for _, value in parse_qsl(query, keep_blank_values=False) if len(value) >= 4]
    return secrets


class Redactor:
    """Replaces the secrets of the given URIs and of the credential environment variables in any text."""

    def __init__(self, uris: Iterable[str | None] = ()):
        secrets = {s for uri in uris if uri for s in uri_secrets(uri)}
        secrets |= {os.environ[name] for name in SECRET_ENVIRONMENT if len(os.environ.get(name, "")) >= 4}
        # longest first, so a secret that contains another is replaced whole
        self.secrets = sorted(secrets, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        if not isinstance(text, str):
            return text
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
        return _SIGNED_PARAMETER.sub(lambda m: m.group(1) + REDACTED, text)
