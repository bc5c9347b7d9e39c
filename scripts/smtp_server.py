"""A real SMTP server for the SMTP provider's tests (aiosmtpd), started by scripts/test.sh.

Two listeners on 127.0.0.1:
  --port        plain text, offering STARTTLS (so "none" and "starttls" both work)
  --tls-port    TLS from the first byte ("tls", port-465 style)
The certificate is generated at start for 127.0.0.1/localhost by a throwaway CA whose
certificate is written to <dir>/ca.pem so tests can trust it. AUTH (PLAIN/LOGIN, only over TLS) accepts
mailpilot / mailpilot-secret and answers 535 to anything else; AUTH is optional.

Replies are injected by the recipient's local part:
  tempfail@…  → 451 4.3.0 (transient)       reject@…  → 550 5.1.1 (permanent)
Every accepted message is written whole (temp file + rename) to
<dir>/messages/<recipient>/<time>-<uuid>.eml, so tests count what each address got.
When both listeners are up, <dir>/ready is written.
"""

import argparse
import datetime
import ipaddress
import os
import ssl
import time
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

USER, PASSWORD = b"mailpilot", b"mailpilot-secret"


def make_certificate(directory):
    """A throwaway CA (written to ca.pem for the tests to trust) and a server certificate
    it signs for localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Mailpilot test CA")])
    ca = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            ca_name,
            key.public_key(),
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = os.path.join(directory, "ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server-key.pem")
    with open(ca_path, "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login == USER and auth_data.password == PASSWORD
    )
    return AuthResult(success=ok, handled=False)


class Handler:
    def __init__(self, directory):
        self.directory = os.path.join(directory, "messages")
        os.makedirs(self.directory, exist_ok=True)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "tempfail":
            return "451 4.3.0 Try again later (injected)"
        if local == "reject":
            return "550 5.1.1 No such user (injected)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        queue_id = uuid.uuid4().hex[:12].upper()
        for rcpt in envelope.rcpt_tos:
            folder = os.path.join(self.directory, rcpt.lower())
            os.makedirs(folder, exist_ok=True)
            name = f"{time.time_ns()}-{queue_id}.eml"
            tmp = os.path.join(folder, "." + name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(envelope.original_content or envelope.content)
            os.rename(tmp, os.path.join(folder, name))
        return f"250 2.0.0 Ok: queued as {queue_id}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    context = make_certificate(args.dir)
    handler = Handler(args.dir)
    common = dict(authenticator=authenticator, decode_data=False)
    starttls = Controller(
        handler,
        hostname=args.host,
        port=args.port,
        server_hostname="localhost",
        tls_context=context,
        auth_require_tls=True,
        **common,
    )
    implicit = Controller(
        handler,
        hostname=args.host,
        port=args.tls_port,
        server_hostname="localhost",
        ssl_context=context,
        # The whole session is TLS, which aiosmtpd's require-TLS check does not see.
        auth_require_tls=False,
        **common,
    )
    starttls.start()
    implicit.start()
    with open(os.path.join(args.dir, "ready"), "w") as f:
        f.write("ok")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        starttls.stop()
        implicit.stop()


if __name__ == "__main__":
    main()
