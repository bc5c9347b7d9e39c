#!/usr/bin/env python3
"""Signs the SNS sample events in events/ (sns-*.json) with the test signer.

SNS signs a canonical string (`Key\nValue\n` for a fixed list of fields per message
type) with RSA: SHA1 for SignatureVersion 1, SHA256 for 2. The sample events are signed
with functions/webhooks/tests/testdata/sns-sample-signer.key (a throwaway key made for
these samples); the webhooks function's tests serve its certificate
(sns-sample-signer.pem) as the SigningCertURL's, so the samples go through the real
verification. Run this after editing a sample:

    python3 scripts/sign-sns-events.py events/sns-*.json
"""

import base64
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = os.path.join(ROOT, "functions/webhooks/tests/testdata/sns-sample-signer.key")


def string_to_sign(m):
    if m["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{m[n]}\n" for n in names if n in m)


def sign(path):
    with open(path) as f:
        m = json.load(f)
    digest = {"1": "-sha1", "2": "-sha256"}[m["SignatureVersion"]]
    sig = subprocess.run(
        ["openssl", "dgst", digest, "-sign", KEY],
        input=string_to_sign(m).encode(),
        capture_output=True,
        check=True,
    ).stdout
    m["Signature"] = base64.b64encode(sig).decode()
    with open(path, "w") as f:
        json.dump(m, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        sign(p)
        print("signed", p)
