"""Certificates and keys for the sandbox's control plane, written as PEM files.

One CA signs the API server's serving certificate and one client certificate per identity
(admin, controller manager, scheduler, kwok). Client identities use the names Kubernetes'
RBAC bootstrap policy already grants (``system:kube-controller-manager``,
``system:kube-scheduler``), so the components run with the permissions they have in a real
cluster instead of as cluster-admin. ECDSA P-256 keys: generated in milliseconds, accepted
by every component, including for service-account token signing (ES256).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY: Final = dt.timedelta(days=365)
# Clocks of parallel processes may disagree by a little; a certificate valid from "now"
# could be rejected as not-yet-valid.
BACKDATE: Final = dt.timedelta(minutes=5)
ADMIN_USER: Final = "voicefleet-sandbox-admin"
MASTERS_GROUP: Final = "system:masters"
CONTROLLER_MANAGER_USER: Final = "system:kube-controller-manager"
SCHEDULER_USER: Final = "system:kube-scheduler"
FRONT_PROXY_CA: Final = "front-proxy-ca"
FRONT_PROXY_CLIENT: Final = "front-proxy-client"
# The real node's identities, as kubeadm names them: the Node authorizer and
# NodeRestriction know a kubelet by this user and group; kube-proxy's default RBAC binding
# (system:node-proxier) names its user.
NODE_USER_PREFIX: Final = "system:node:"
NODES_GROUP: Final = "system:nodes"
KUBE_PROXY_USER: Final = "system:kube-proxy"
# The first address of the service range (components.SERVICE_CIDR): in-cluster clients,
# such as the operator in a pod of the real node, reach the API server there.
KUBERNETES_SERVICE_IP: Final = "10.96.0.1"
# The API server's in-cluster names and the first address of the service range, as
# kubeadm puts them on its serving certificate.
API_SERVER_DNS_NAMES: Final = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Every file the control plane needs."""

    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    service_account_key: Path
    service_account_pub: Path
    # The aggregation layer's own CA and client, as kubeadm makes them: the controller
    # manager and scheduler read this CA from the API server to authenticate requests.
    front_proxy_ca: KeyPair
    front_proxy_client: KeyPair
    # Client certificates of the real node's kubelet (by node name) and kube-proxy.
    kubelets: dict[str, KeyPair] = field(default_factory=dict)
    kube_proxy: KeyPair | None = None


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _Ca:
    """The sandbox's certificate authority, kept in memory while the files are written."""

    def __init__(self, directory: Path, stem: str = "ca") -> None:
        self.key = _new_key()
        self.name = _name(f"voicefleet-sandbox-{stem}")
        self.cert = (
            _builder(self.name, self.name, self.key.public_key())
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
            .sign(self.key, hashes.SHA256())
        )
        self.files = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        _write_cert(self.cert, self.files.cert)
        _write_key(self.key, self.files.key)

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        organization: str | None = None,
        server: bool = False,
    ) -> KeyPair:
        """Sign a client (or, with ``server``, a loopback serving) certificate."""
        key = _new_key()
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(_name(common_name, organization), self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in API_SERVER_DNS_NAMES]
            alt_names.extend(
                x509.IPAddress(ipaddress.ip_address(address))
                for address in ("127.0.0.1", KUBERNETES_SERVICE_IP)
            )
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
        _write_cert(builder.sign(self.key, hashes.SHA256()), pair.cert)
        _write_key(key, pair.key)
        return pair


def generate(directory: Path, nodes: Sequence[str] = ()) -> Pki:
    """Write a fresh CA, serving and client certificates and the service-account keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca(directory)
    front_proxy = _Ca(directory, FRONT_PROXY_CA)
    sa_key = _new_key()
    sa_key_path, sa_pub_path = directory / "sa.key", directory / "sa.pub"
    _write_key(sa_key, sa_key_path)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        ca=ca.files,
        apiserver=ca.issue(directory, "apiserver", "kube-apiserver", server=True),
        admin=ca.issue(directory, "admin", ADMIN_USER, organization=MASTERS_GROUP),
        controller_manager=ca.issue(directory, "controller-manager", CONTROLLER_MANAGER_USER),
        scheduler=ca.issue(directory, "scheduler", SCHEDULER_USER),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
        front_proxy_ca=front_proxy.files,
        front_proxy_client=front_proxy.issue(directory, FRONT_PROXY_CLIENT, FRONT_PROXY_CLIENT),
        kubelets={
            node: ca.issue(
                directory, f"kubelet-{node}", NODE_USER_PREFIX + node, organization=NODES_GROUP
            )
            for node in nodes
        },
        kube_proxy=ca.issue(directory, "kube-proxy", KUBE_PROXY_USER) if nodes else None,
    )
