"""The local cluster's certificates and keys, made once per cluster as kubeadm makes kind's.

`ensure_pki(directory)` creates what is missing and loads the rest (so a restarted or repaired
cluster keeps its CA, and every kubeconfig and token stays valid): a cluster CA, the API
server's serving certificate (for 127.0.0.1, ::1, localhost and the in-cluster names of the
`kubernetes` Service), an admin client certificate (CN kubernetes-admin, O system:masters) and
the service-account signing key (`kubeconfig.py` writes kubeconfigs carrying them). Called by
`sfc-k8s local up` (through `credentials.py` and the API server's `--pki` option), by the API
server to load its certificates, and by the tests and benchmarks that serve HTTPS.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_USER = "kubernetes-admin"
ADMIN_GROUP = "system:masters"
VALID_DAYS = 3650  # the CA and the certificates: a local cluster is not rotated
SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
# The last: the `kubernetes` Service's ClusterIP, where pods reach the server (local/node).
SERVING_ADDRESSES = ("127.0.0.1", "::1", "10.96.0.1")


class PKIError(RuntimeError):
    """The certificates of a cluster could not be made or read."""


@dataclass(frozen=True)
class PKI:
    """Paths of a cluster's certificates and keys (PEM files in one directory)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def service_account_key(self) -> Path:
        """The RSA key that signs service-account tokens (kube-apiserver's sa.key)."""
        return self.directory / "sa.key"


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only, atomically (a crash leaves no half key)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _make_ca(pki: PKI) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("sfc-k8s-local-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(pki.ca_key, _key_pem(key))
    _write_public(pki.ca_cert, cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise PKIError(f"cannot read the cluster CA in {pki.directory}: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{pki.ca_key}: expected an EC private key")
    return cert, key


def _issue(
    pki: PKI,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    paths: tuple[Path, Path],
    *,
    names: x509.SubjectAlternativeName | None = None,
) -> None:
    ca_cert, ca_key = _load_ca(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names is not None:
        builder = builder.add_extension(names, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_private(paths[1], _key_pem(key))
    _write_public(paths[0], cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(directory: Path) -> PKI:
    """The cluster's PKI in ``directory``, each missing part made (a present one is kept)."""
    pki = PKI(Path(directory))
    pki.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (pki.ca_cert.is_file() and pki.ca_key.is_file()):
        _make_ca(pki)
    if not (pki.serving_cert.is_file() and pki.serving_key.is_file()):
        alt = x509.SubjectAlternativeName(
            [x509.DNSName(n) for n in SERVING_NAMES]
            + [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVING_ADDRESSES]
        )
        _issue(
            pki,
            _name("kube-apiserver"),
            ExtendedKeyUsageOID.SERVER_AUTH,
            (pki.serving_cert, pki.serving_key),
            names=alt,
        )
    if not (pki.admin_cert.is_file() and pki.admin_key.is_file()):
        _issue(
            pki,
            _name(ADMIN_USER, ADMIN_GROUP),
            ExtendedKeyUsageOID.CLIENT_AUTH,
            (pki.admin_cert, pki.admin_key),
        )
    if not pki.service_account_key.is_file():
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_private(pki.service_account_key, _key_pem(sa_key))
    return pki


def load_service_account_key(pki: PKI) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(
            pki.service_account_key.read_bytes(), password=None
        )
    except (OSError, ValueError) as err:
        raise PKIError(f"cannot read {pki.service_account_key}: {err}") from err
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PKIError(f"{pki.service_account_key}: expected an RSA private key")
    return key
