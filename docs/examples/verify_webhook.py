"""Verifying a govbus webhook delivery (Standard Webhooks signatures) in Python.

Use `verify` in the handler of your webhook, with the secret the subscription answered with
(`whsec_…`), the request's headers and its raw body (before any JSON parsing). Run as a
program it checks one delivery: `python3 verify_webhook.py SECRET ID TIMESTAMP SIGNATURE < body`
exits 0 when the delivery is genuine and 1 when it is not.
"""

import base64
import hashlib
import hmac
import sys
import time

TOLERANCE_SECONDS = 5 * 60


def verify(secret, webhook_id, webhook_timestamp, webhook_signature, body, now=None):
    """Whether the body was sent by govbus with this secret, recently."""
    now = time.time() if now is None else now
    try:
        sent = int(webhook_timestamp)
    except ValueError:
        return False
    # A delivery replayed long after it was sent is refused.
    if abs(now - sent) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{webhook_timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # While a secret is being rotated, a delivery carries one signature per secret.
    for signature in webhook_signature.split():
        version, _, value = signature.partition(",")
        if version == "v1" and hmac.compare_digest(expected, value):
            return True
    return False


if __name__ == "__main__":
    secret, webhook_id, webhook_timestamp, webhook_signature = sys.argv[1:5]
    genuine = verify(secret, webhook_id, webhook_timestamp, webhook_signature, sys.stdin.buffer.read())
    sys.exit(0 if genuine else 1)
