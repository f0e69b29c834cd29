"""Optional TLS for every gRPC connection of a run: a per-run CA, one certificate per server.

With `--tls` (config `net.tls`) the run directory holds a certificate authority made for
this run only:

    RUN_DIR/tls/ca.pem   the CA's private key and certificate (mode 0600, like the secret)
    RUN_DIR/tls/ca.crt   the CA's certificate alone (what a client in another language needs)

It is created once, by whoever needs it first (the run's starter, or lazily by the first
service); racing creators are safe because the file appears with one atomic `link`. Each
server then issues itself a short-lived leaf certificate for its bind host (plus the node's
hostname, localhost and 127.0.0.1), signed by the run's CA, kept only in memory. Clients
trust the run's CA and nothing else, so a server of another run, or a man in the middle,
fails the handshake. The token check stays on top of TLS: TLS hides the token on the wire,
the token says who may call.

`RunTLS` is what `ba3c.rpc.make_server` / `make_channel` take; `ba3c.service.start` turns
it on process-wide (`rpc.use_tls`) when the configuration asks for it, so services need no
code of their own for it.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import stat
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ba3c.rundir import RunDir, RunDirError, atomic_write

CA_BUNDLE = "ca.pem"  # key + certificate, 0600
CA_CERT = "ca.crt"  # certificate only
CA_DAYS = 3650
LEAF_DAYS = 30


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ba3c"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(run_name: str) -> tuple[bytes, bytes]:
    """A fresh self-signed CA: (private key PEM, certificate PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"ba3c run CA {run_name}")
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def _san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def issue_leaf(ca_key_pem: bytes, ca_cert_pem: bytes, hosts: list[str]) -> tuple[bytes, bytes]:
    """A server certificate for `hosts` signed by the CA: (key PEM, certificate chain PEM)."""
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM) + ca_cert_pem


def _split_bundle(bundle: bytes, path: Path) -> tuple[bytes, bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    at = bundle.find(marker)
    if at <= 0:
        raise RunDirError(f"{path} is not a ba3c CA bundle (private key, then certificate)")
    return bundle[:at], bundle[at:]


class RunTLS:
    """The TLS material of one run directory; creates the run's CA on first use."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.folder = run_dir.sub("tls")
        self._ca: tuple[bytes, bytes] | None = None

    @property
    def bundle_path(self) -> Path:
        return self.folder / CA_BUNDLE

    @property
    def cert_path(self) -> Path:
        return self.folder / CA_CERT

    def ensure_ca(self) -> bool:
        """Creates the CA unless it exists (safe when processes race). True if this call did."""
        self.folder.mkdir(parents=True, exist_ok=True)
        created = False
        if not self.bundle_path.exists():
            key, cert = new_ca(self.run_dir.path.name)
            # linked into place: atomic, and only one of several racing starters wins
            created = atomic_write(self.bundle_path, key + cert, mode=0o600, exclusive=True)
        if not self.cert_path.exists():
            atomic_write(self.cert_path, self._load()[1], mode=0o644)
        return created

    def _load(self) -> tuple[bytes, bytes]:
        if self._ca is None:
            path = self.bundle_path
            try:
                st = path.stat()
            except FileNotFoundError:
                raise RunDirError(f"{path} does not exist; start the run with --tls") from None
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise RunDirError(
                    f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"run `chmod 600 {path}` and start again"
                )
            self._ca = _split_bundle(path.read_bytes(), path)
        return self._ca

    def check(self) -> None:
        """Creates the run's CA if needed and loads it; RunDirError if it is unusable."""
        self.ensure_ca()
        self._load()

    @property
    def ca_certificate(self) -> bytes:
        self.ensure_ca()
        return self._load()[1]

    def server_credentials(self, host: str) -> grpc.ServerCredentials:
        """Credentials of a server bound to `host`, with a leaf certificate issued now."""
        self.ensure_ca()
        ca_key, ca_cert = self._load()
        hosts = [host, socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1"]
        if host in ("0.0.0.0", "::"):
            hosts = hosts[1:]
        key, chain = issue_leaf(ca_key, ca_cert, hosts)
        return grpc.ssl_server_credentials([(key, chain)])

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a client that trusts this run's CA and nothing else."""
        return grpc.ssl_channel_credentials(root_certificates=self.ca_certificate)
