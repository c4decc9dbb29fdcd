"""The OpenAI plugin's TLS: one context per process, with the SDK client's own trust.

A real HTTPS server on 127.0.0.1 with a certificate made here, signed by a CA made
here: trusted through ``SSL_CERT_FILE`` it answers; a different CA is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest

from .servers import FakeOpenAI

pytest.importorskip("langchain_openai")
x509 = pytest.importorskip("cryptography.x509")

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from dlg.plugins import openai as plugin  # noqa: E402


def _name(text: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 it signed, and another CA."""
    ca_key, other_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _certificate("dlg test CA", ca_key, "dlg test CA", ca_key, ca=True)
    other = _certificate("another CA", other_key, "another CA", other_key, ca=True)
    server = _certificate("127.0.0.1", key, "dlg test CA", ca_key, ca=False)
    paths = {"ca": tmp_path / "ca.pem", "other": tmp_path / "other.pem",
             "cert": tmp_path / "server.pem", "key": tmp_path / "server.key"}
    paths["ca"].write_bytes(_pem(ca))
    paths["other"].write_bytes(_pem(other))
    paths["cert"].write_bytes(_pem(server))
    paths["key"].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths


class TlsOpenAI(FakeOpenAI):
    """``FakeOpenAI`` over HTTPS, with the certificate given."""

    def __init__(self, cert: Path, key: Path):
        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def base_url(self) -> str:
        return super().base_url.replace("http://", "https://", 1)


def _causes(exc: BaseException | None) -> str:
    """The exception and what caused it, all the way down."""
    seen = []
    while exc is not None and len(seen) < 20:
        seen.append(repr(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(seen)


async def test_a_server_signed_by_the_ca_in_ssl_cert_file_is_trusted(pki, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with TlsOpenAI(pki["cert"], pki["key"]) as server:
        model = plugin._make_compatible("m", {"base_url": server.base_url})
        answer = await model.ainvoke("hello")
        assert answer.content == "Hello from the server"
        assert len(server.requests) == 1


async def test_a_server_signed_by_another_ca_is_refused(pki, monkeypatch):
    import openai

    monkeypatch.setenv("SSL_CERT_FILE", str(pki["other"]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with TlsOpenAI(pki["cert"], pki["key"]) as server:
        model = plugin._make_compatible("m", {"base_url": server.base_url})
        with pytest.raises(openai.APIConnectionError) as caught:
            await model.ainvoke("hello")
        assert "CERTIFICATE_VERIFY_FAILED" in _causes(caught.value)
        assert server.requests == []
    # and trusted again once SSL_CERT_FILE names its CA: the context follows the setting
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    with TlsOpenAI(pki["cert"], pki["key"]) as server:
        model = plugin._make_compatible("m", {"base_url": server.base_url})
        assert (await model.ainvoke("hello")).content == "Hello from the server"


def test_models_share_one_tls_context(monkeypatch):
    """Each client made its own TLS context, reading the CA bundle (about 20 ms): two for
    each model made (dlg's async client and langchain-openai's sync one)."""
    loads: list[Any] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> Any:
        loads.append(args or kwargs)
        return load(self, *args, **kwargs)

    plugin._make_compatible("m", {"base_url": "http://127.0.0.1:9/v1"})  # the first one
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    models = [plugin._make_compatible("m", {"base_url": f"http://127.0.0.1:9/tls{i}"})
              for i in range(3)]
    models.append(plugin._make("gpt-4o-mini", {"api_key": "sk-test-not-real"}))
    assert loads == []
    contexts = {id(m.http_async_client._transport._pool._ssl_context) for m in models}
    assert len(contexts) == 1


_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
            "all_proxy", "NO_PROXY", "no_proxy")


def test_the_sync_client_keeps_langchain_openais_tcp_keepalive(monkeypatch):
    """dlg gives ChatOpenAI its own clients, so langchain-openai does not make its
    default ones, which set TCP keepalive (a silent peer is found in about two minutes,
    not hung on): a synchronous ``invoke`` opened a socket with none. Now the socket it
    opens to a real server carries the options the installed langchain-openai sets."""
    import socket

    from langchain_openai.chat_models._client_utils import _default_socket_options

    for name in _PROXIES:
        monkeypatch.delenv(name, raising=False)
    expected = _default_socket_options()
    assert (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1) in expected
    opened: list[socket.socket] = []
    connect = socket.create_connection

    def watched(*args: Any, **kwargs: Any) -> socket.socket:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(socket, "create_connection", watched)
    monkeypatch.setattr(plugin, "_TLS", {})  # a sync client of this test's own
    with FakeOpenAI(keep_alive=True) as server:
        model = plugin._make_compatible("m", {"base_url": server.base_url})
        assert model.invoke("hello").content == "Hello from the server"
        assert len(opened) == 1  # still open: the pool keeps it alive
        for level, name, value in expected:
            assert opened[0].getsockopt(level, name) == value, (level, name)
        model.root_client.close()
    # and the async client dlg makes for each model sets the same
    assert tuple(model.http_async_client._transport._pool._socket_options) == expected


def test_no_keepalive_options_where_langchain_openai_sets_none(monkeypatch):
    """``LANGCHAIN_OPENAI_TCP_KEEPALIVE=0`` turns them off, and a proxy in the
    environment keeps the client's own transport (which would shadow it), as
    langchain-openai does for its clients."""
    for name in _PROXIES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGCHAIN_OPENAI_TCP_KEEPALIVE", "0")
    assert plugin._tls()[2] == ()
    monkeypatch.delenv("LANGCHAIN_OPENAI_TCP_KEEPALIVE")
    assert plugin._tls()[2] != ()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setattr(plugin, "_TLS", {})
    _, sync, sockets = plugin._tls()
    assert sockets == ()
    assert sync._mounts  # the client's proxy from the environment, as before
