"""The SSRF guard: address checks (no traffic) and the guarded HTTP client (traffic only to 127.0.0.1)."""
from __future__ import annotations

import ipaddress
import shutil
import ssl
import subprocess
import threading
import time
from typing import Iterator

import certifi
import pytest

from app import connectors
from app.connectors import ActionError
from app.connectors.base import Credential
from app.engine.cancel import Cancelled, CancelToken
from app.security.ssrf import STRICT, AddressPolicy, BlockedDestination, check_address, parse_ip_literal, \
    resolve_and_check
from tests.receiver import Receiver, Reply, make_client, receiver  # noqa: F401 (fixtures)

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "169.254.1.1", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "ff02::1", "fd00:ec2::254",
    "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::127.0.0.1",
    "2002:7f00:1::", "2002:a00:1::", "64:ff9b::a00:1", "64:ff9b::7f00:1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
           "2002:808:808::", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_check_address_refuses_internal_ranges(address):
    with pytest.raises(BlockedDestination, match="actions may only reach public addresses"):
        check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED)
def test_check_address_allows_public_addresses(address):
    check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address, why", [
    ("169.254.169.254", "cloud metadata"), ("127.0.0.1", "loopback"), ("10.0.0.1", "private"),
    ("100.64.0.1", "shared"), ("::ffff:127.0.0.1", "loopback (embeds 127.0.0.1)"), ("ff02::1", "multicast"),
])
def test_check_address_says_why(address, why):
    with pytest.raises(BlockedDestination, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("[::1]", "::1"),
    ("::ffff:127.0.0.1", "::ffff:7f00:1"), ("example.com", None), ("1.2.3.4.example.com", None),
])
def test_parse_ip_literal_reads_every_inet_aton_form(host, expected):
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed else None) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::1]",
                                  "::ffff:127.0.0.1", "localhost"])
def test_resolve_and_check_refuses_loopback_in_any_spelling(host):
    with pytest.raises(BlockedDestination):
        resolve_and_check(host, 80, STRICT)


def test_resolve_and_check_returns_addresses_when_private_networks_are_allowed():
    infos = resolve_and_check("2130706433", 8080, AddressPolicy(allow_private=True))
    assert [sockaddr for *_, sockaddr in infos] == [("127.0.0.1", 8080)]


def test_policy_exception_admits_one_address_and_port_only():
    policy = AddressPolicy(exceptions=frozenset({(ipaddress.ip_address("127.0.0.1"), 8080)}))
    policy.check(ipaddress.ip_address("127.0.0.1"), 8080)
    with pytest.raises(BlockedDestination):
        policy.check(ipaddress.ip_address("127.0.0.1"), 8081)
    with pytest.raises(BlockedDestination):
        policy.check(ipaddress.ip_address("127.0.0.2"), 8080)


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "0x7f000001", "127.1", "[::1]",
                                  "[::ffff:127.0.0.1]", "localhost"])
def test_client_refuses_loopback_without_sending(make_client, receiver, host):
    client = make_client(policy=STRICT)
    with pytest.raises(ActionError, match="actions may only reach public addresses") as caught:
        client.send("POST", f"http://{host}:{receiver.port}/x", token=CancelToken(), data=b"{}")
    assert not caught.value.retryable
    assert receiver.requests() == []


def _first_hop_only(receiver: Receiver) -> AddressPolicy:
    return AddressPolicy(exceptions=frozenset({(ipaddress.ip_address("127.0.0.1"), receiver.port)}))


@pytest.mark.parametrize("target", ["other_port", "[::1]", "127.0.0.2", "metadata"])
def test_client_refuses_a_redirect_to_a_forbidden_address(make_client, receiver, target):
    with Receiver() as forbidden:
        location = {
            "other_port": forbidden.url("/stolen"),
            "[::1]": f"http://[::1]:{forbidden.port}/stolen",
            "127.0.0.2": f"http://127.0.0.2:{forbidden.port}/stolen",
            "metadata": "http://169.254.169.254/latest/meta-data/",
        }[target]
        receiver.redirect("/jump", location)
        client = make_client(policy=_first_hop_only(receiver))
        with pytest.raises(ActionError, match="actions may only reach public addresses"):
            client.send("GET", receiver.url("/jump"), token=CancelToken())
        assert [r.path for r in receiver.requests()] == ["/jump"]
        assert forbidden.requests() == []


def test_client_follows_an_allowed_redirect(make_client, receiver):
    receiver.redirect("/jump", receiver.url("/landed"))
    response = make_client(policy=_first_hop_only(receiver)).send("GET", receiver.url("/jump"), token=CancelToken())
    assert response.status_code == 200
    assert [r.path for r in receiver.requests()] == ["/jump", "/landed"]


def test_client_stops_after_five_redirects(make_client, receiver):
    receiver.redirect("/loop", receiver.url("/loop"))
    with pytest.raises(ActionError, match="more than 5 redirects") as caught:
        make_client().send("GET", receiver.url("/loop"), token=CancelToken())
    assert not caught.value.retryable
    assert len(receiver.requests()) == 6


def _landing(status: int, method: str) -> tuple[str, bytes]:
    """RFC 9110 §15.4 as curl applies it: 303 -> GET without a body; 301/302 turn POST alone into GET."""
    if status == 303 or status in (301, 302) and method == "POST":
        return "GET", b""
    return method, b'{"n": 1}'


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_client_redirects_keep_method_and_body_per_rfc_9110(make_client, receiver, status, method):
    receiver.redirect("/jump", "/landed", status)
    make_client().send(method, receiver.url("/jump"), token=CancelToken(), data=b'{"n": 1}',
                       headers={"Content-Type": "application/json"})
    [request] = receiver.requests("/landed")
    landed = _landing(status, method)
    assert (request.method, request.body) == landed
    assert request.headers.get("content-type") == ("application/json" if landed[1] else None)


@pytest.mark.parametrize("status, method, landed", [
    (301, "PUT", ("PUT", b"{}")),  # a PUT answered by 301 is re-sent as a PUT with its body
    (302, "DELETE", ("DELETE", b"{}")),
    (303, "PATCH", ("GET", b"")),
])
def test_client_redirects_twice_keeping_what_each_hop_allows(make_client, receiver, status, method, landed):
    receiver.redirect("/first", "/jump", 307)
    receiver.redirect("/jump", "/landed", status)
    make_client().send(method, receiver.url("/first"), token=CancelToken(), data=b"{}",
                       headers={"Content-Type": "application/json"})
    [request] = receiver.requests("/landed")
    assert (request.method, request.body) == landed


def test_client_drops_authorization_when_a_redirect_leaves_the_origin(make_client, receiver):
    with Receiver() as other:
        receiver.redirect("/away", other.url("/landed"))
        receiver.redirect("/near", receiver.url("/landed"))
        client = make_client()
        for path in ("/away", "/near"):
            client.send("GET", receiver.url(path), token=CancelToken(), headers={"Authorization": "Bearer s3cret"})
        assert "authorization" not in other.requests("/landed")[0].headers
    assert receiver.requests("/landed")[0].headers["authorization"] == "Bearer s3cret"


def test_a_credentials_own_header_is_dropped_when_a_redirect_leaves_the_origin(make_client, receiver):
    """An http_header credential (X-Api-Key) is as secret as Authorization: same-origin hops keep it."""
    credential = Credential("http_header", {"name": "X-Api-Key", "value": "k3y"})
    with Receiver() as other:
        receiver.redirect("/away", other.url("/landed"))
        receiver.redirect("/near", receiver.url("/landed"))
        client = make_client()
        for path in ("/away", "/near"):
            connectors.get("http_request").execute({"url": receiver.url(path), "method": "GET"}, client,
                                                   CancelToken(), credential=credential)
        assert "x-api-key" not in other.requests("/landed")[0].headers
    assert receiver.requests("/landed")[0].headers["x-api-key"] == "k3y"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for localhost, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_receiver(tls_files) -> Iterator[Receiver]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_files)
    with Receiver(tls=context) as rx:
        yield rx


@pytest.mark.parametrize("environment", [{"REQUESTS_CA_BUNDLE": "ours"}, {"CURL_CA_BUNDLE": "ours"},
                                         {"REQUESTS_CA_BUNDLE": "ours", "CURL_CA_BUNDLE": "certifi"}])
def test_tls_trusts_the_ca_bundle_the_environment_names(make_client, tls_receiver, tls_files, monkeypatch, environment):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ActionError, match="certificate verify failed") as caught:
        make_client().send("GET", tls_receiver.url("/ok"), token=CancelToken())
    assert not caught.value.retryable
    for name, bundle in environment.items():
        monkeypatch.setenv(name, tls_files[0] if bundle == "ours" else certifi.where())
    assert make_client().send("GET", tls_receiver.url("/ok"), token=CancelToken()).status_code == 200


def test_tls_verifies_the_host_name_while_connecting_to_the_checked_address(make_client, tls_receiver, tls_files,
                                                                            monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_files[0])
    client = make_client()
    assert client.send("GET", tls_receiver.url("/ok"), token=CancelToken()).status_code == 200
    with pytest.raises(ActionError, match="certificate verify failed"):
        client.send("GET", f"https://127.0.0.1:{tls_receiver.port}/ok", token=CancelToken())

    tls_receiver.respond("/hang", Reply(hang=True))
    token = CancelToken()
    canceller = threading.Thread(target=lambda: (tls_receiver.wait_for(1, path="/hang"), token.cancel("api:usr_1")))
    canceller.start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        client.send("GET", tls_receiver.url("/hang"), token=token, timeout=30)
    assert time.monotonic() - started < 2.0
    canceller.join(5)
