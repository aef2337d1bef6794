#!/usr/bin/env python3
"""A throwaway test CA and a server certificate for 127.0.0.1 and localhost,
for the TLS stand-ins of the tests (scripts/services.sh) and the benchmark
(scripts/bench_cold_start.py). Needs `cryptography` (moto's dependency, in
.venv).

    python scripts/test_ca.py DIR     writes DIR/{ca,cert,key,bundle}.pem

bundle.pem is the system's CA bundle (when one is found) plus the test CA:
what a client that should trust both is pointed at (SSL_CERT_FILE).
"""

import datetime
import os
import sys

SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem",
                  "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem")


def make_tls(directory, system=None):
    """A test CA and a server certificate for 127.0.0.1 and localhost
    (RSA 2048, like the public AWS chains), and the bundle the contenders
    trust: the system bundle + the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    os.makedirs(directory, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "p1-key-broker test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key", "bundle")}
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    open(paths["ca"], "wb").write(ca_pem)
    open(paths["cert"], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(paths["key"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(paths["bundle"], "wb") as f:
        if system:
            f.write(open(system, "rb").read().rstrip(b"\n") + b"\n")
        f.write(ca_pem)
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: test_ca.py DIR")
    system = next((p for p in SYSTEM_BUNDLES if os.path.isfile(p)), None)
    make_tls(sys.argv[1], system)
