"""TLS at the edge: Mozilla intermediate (TLS 1.2 and 1.3 only), HTTP/2, HTTP -> HTTPS."""

from __future__ import annotations

import socket
import ssl
import warnings

import pytest

from .stack import Stack

pytestmark = pytest.mark.e2e

MOZILLA_INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
}


def handshake(stack: Stack, version: ssl.TLSVersion, *, ciphers: str | None = None) -> ssl.SSLSocket:
    """Connect offering exactly one protocol version; the caller closes the socket."""
    with warnings.catch_warnings():
        # TLS 1.0/1.1 are deprecated in the ssl module too; offering them is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.create_default_context(cafile=str(stack.ca))
        context.minimum_version = version
        context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    context.set_alpn_protocols(["h2", "http/1.1"])
    assert stack.nginx is not None
    raw = socket.create_connection(("127.0.0.1", stack.nginx.https_port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"]
)
def test_old_tls_versions_are_refused_by_the_server(stack: Stack, version: ssl.TLSVersion) -> None:
    # SECLEVEL=0 makes our own client willing to speak the old protocol, so the refusal
    # we observe is the server's: it answers with a protocol_version alert.
    with pytest.raises(ssl.SSLError) as refused:
        handshake(stack, version, ciphers="DEFAULT:@SECLEVEL=0")
    assert (
        "PROTOCOL_VERSION" in str(refused.value).upper()
        or "UNSUPPORTED_PROTOCOL" in str(refused.value).upper()
    ), refused.value


@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
def test_tls12_and_tls13_are_accepted_with_strong_ciphers(
    stack: Stack, version: ssl.TLSVersion, name: str
) -> None:
    with handshake(stack, version) as tls:
        assert tls.version() == name
        negotiated = tls.cipher()
        assert negotiated is not None
        cipher, _, bits = negotiated
        assert bits >= 128
        if version is ssl.TLSVersion.TLSv1_2:
            assert cipher in MOZILLA_INTERMEDIATE_TLS12
        assert tls.selected_alpn_protocol() == "h2"  # HTTP/2 is on


def test_tls12_refuses_ciphers_outside_the_intermediate_list(stack: Stack) -> None:
    # CBC suites are not in Mozilla's intermediate list.
    with pytest.raises(ssl.SSLError):
        handshake(stack, ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_plain_http_redirects_permanently_to_https_keeping_method_and_path(stack: Stack, method: str) -> None:
    with stack.client() as http:
        response = http.request(
            method, f"{stack.http_url}/api/records?limit=5", allow_redirects=False, timeout=5, json={}
        )
    assert response.status_code == 308  # 308 keeps the method and body
    # To the configured server name (NGINX_SERVER_NAME=localhost here), not the Host we sent.
    assert stack.nginx is not None
    assert response.headers["Location"] == f"https://localhost:{stack.nginx.https_port}/api/records?limit=5"
