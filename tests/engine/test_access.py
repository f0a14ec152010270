"""Access control: tokens and roles per RPC, open health checks, TLS with and without client
certificates, and tokens kept out of logs and metrics."""

from __future__ import annotations

import datetime
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.sdk import Connection, CrossrecClient, CrossrecError, Event
from engine.api.auth import AuthConfigError, parse_tokens
from engine.api.server import BackgroundServer
from engine.config import ArmsConfig, AuthConfig, EngineConfig, ServerConfig, StoreConfig, TlsConfig

QUERY, INGEST, ADMIN = "q" * 20 + "-query", "i" * 20 + "-ingest", "a" * 20 + "-admin"
TOKENS = f"query:{QUERY},ingest:{INGEST},admin:{ADMIN}"


def config(tiny_built, tmp_path, protect_health=False, tls=TlsConfig()) -> EngineConfig:
    return EngineConfig(
        arms=ArmsConfig(artifact=str(tiny_built)),
        server=ServerConfig(port=0),
        store=StoreConfig(path=str(tmp_path / "e.sqlite"), pseudonym_key="k" * 32),
        auth=AuthConfig(tokens=TOKENS, protect_health=protect_health),
        tls=tls,
    )


def code_of(call) -> str:
    try:
        call()
    except CrossrecError as exc:
        return exc.code
    return "OK"


@pytest.fixture(scope="module")
def secured(tiny_built, tmp_path_factory):
    with BackgroundServer(config(tiny_built, tmp_path_factory.mktemp("auth"))) as server:
        yield server


def client(server, token: str = "") -> CrossrecClient:
    return CrossrecClient(server.target, timeout=10, connection=Connection(token=token))


def test_each_role_may_call_its_methods_and_no_others(secured):
    calls = {
        "Recommend": lambda c: c.recommend("u", k=2),
        "GetStatus": lambda c: c.status(),
        "IngestEvents": lambda c: c.ingest([Event("u", "i00", "view")]),
        "DeleteUser": lambda c: c.delete_user("nobody"),
        "SwapVersion": lambda c: c.swap_version(),
    }
    allowed = {
        QUERY: {"Recommend", "GetStatus"},
        INGEST: {"Recommend", "GetStatus", "IngestEvents"},
        ADMIN: set(calls),
    }
    for token, methods in allowed.items():
        with client(secured, token) as c:
            got = {name: code_of(lambda call=call: call(c)) for name, call in calls.items()}
        assert got == {name: "OK" if name in methods else "PERMISSION_DENIED" for name in calls}, (
            token[-6:]
        )
    for token in ("", "not-a-configured-token-at-all", QUERY + "x", QUERY[:-1]):
        with client(secured, token) as c:
            assert {code_of(lambda call=call: call(c)) for call in calls.values()} == {
                "UNAUTHENTICATED"
            }


def test_refusals_say_why_and_name_the_method(secured):
    def refusal(token, call):
        with client(secured, token) as c, pytest.raises(CrossrecError) as caught:
            call(c)
        return caught.value

    none = refusal("", lambda c: c.recommend("u", k=2))
    assert none.code == "UNAUTHENTICATED"
    assert "no bearer token: Recommend needs a token" in str(none)
    wrong = refusal("x" * 20, lambda c: c.status())
    assert wrong.code == "UNAUTHENTICATED"
    assert "unknown token: GetStatus needs a token" in str(wrong)
    denied = refusal(QUERY, lambda c: c.delete_user("u"))
    assert denied.code == "PERMISSION_DENIED"
    assert "role query may not call DeleteUser" in str(denied)


def test_a_malformed_authorization_header_is_unauthenticated(secured):
    from crossrec.v1 import recommend_pb2, service_pb2_grpc

    with grpc.insecure_channel(secured.target) as channel:
        stub = service_pb2_grpc.RecommendServiceStub(channel)
        for header in (f"Basic {QUERY}", QUERY, "Bearer "):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Recommend(
                    recommend_pb2.RecommendRequest(user_id="u", k=2),
                    metadata=(("authorization", header),),
                    timeout=10,
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_stays_open_unless_protected(secured, tiny_built, tmp_path):
    def health(target, token=None):
        with grpc.insecure_channel(target) as channel:
            metadata = (("authorization", f"Bearer {token}"),) if token else None
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10)
                .status
            )

    assert health(secured.target) == health_pb2.HealthCheckResponse.SERVING
    with BackgroundServer(config(tiny_built, tmp_path, protect_health=True)) as server:
        with pytest.raises(grpc.RpcError) as caught:
            health(server.target)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health(server.target, QUERY) == health_pb2.HealthCheckResponse.SERVING


def test_tokens_appear_in_no_log_line_and_no_metric(tiny_built, tmp_path, caplog):
    from prometheus_client import generate_latest

    caplog.set_level(logging.DEBUG)
    with BackgroundServer(config(tiny_built, tmp_path)) as server:
        for token in (QUERY, "wrong-token-wrong-token", ADMIN):
            with client(server, token) as c:
                code_of(lambda c=c: c.ingest([Event("u", "i00", "view")]))
                code_of(lambda c=c: c.recommend("u", k=2))
        exposition = generate_latest(server.metrics.registry).decode()
        config_text = repr(server.engine.config)
    assert 'code="PERMISSION_DENIED"' in exposition
    assert 'code="UNAUTHENTICATED"' in exposition
    # Counted and logged under the method, with the reason (and never the token).
    assert 'crossrec_requests_total{code="PERMISSION_DENIED",method="IngestEvents"} 1.0' in (
        exposition
    )
    assert 'crossrec_requests_total{code="UNAUTHENTICATED",method="Recommend"} 1.0' in exposition
    assert "IngestEvents refused: role query may not call IngestEvents" in caplog.text
    assert "Recommend refused: unknown token" in caplog.text
    for secret in (QUERY, INGEST, ADMIN, "wrong-token-wrong-token"):
        assert secret not in caplog.text
        assert secret not in exposition
        assert secret not in config_text


def test_token_configuration_errors_name_the_entry_not_the_token(tmp_path):
    file = tmp_path / "tokens"
    file.write_text(f"# the engine's tokens\nquery {QUERY}\n\nadmin {ADMIN}  # ops\n")
    assert parse_tokens("", str(file)) == [(QUERY.encode(), "query"), (ADMIN.encode(), "admin")]
    assert parse_tokens(f"ingest:{INGEST}", "") == [(INGEST.encode(), "ingest")]
    # The role ends at the first colon; a token may hold more. Sixteen characters are enough.
    assert parse_tokens("admin:abcd:efgh-ijkl-mnop", "") == [(b"abcd:efgh-ijkl-mnop", "admin")]
    assert parse_tokens("query:" + "s" * 16, "") == [(b"s" * 16, "query")]
    with pytest.raises(AuthConfigError, match="at least 16"):
        parse_tokens("query:" + "s" * 15, "")
    with pytest.raises(AuthConfigError, match=r"auth.tokens entry 2: not a known role"):
        parse_tokens(f"query:{QUERY},root:{ADMIN}", "")
    # Malformed entries put the token where the role should be: it is never echoed.
    secret = "S" * 24
    for inline in (f"query={secret}", f"admin {secret}", f"query:{QUERY},{secret}"):
        with pytest.raises(AuthConfigError) as malformed:
            parse_tokens(inline, "")
        assert secret not in str(malformed.value)
    with pytest.raises(AuthConfigError, match="at least 16 characters") as short:
        parse_tokens("query:short", "")
    assert "short" not in str(short.value).replace("at least", "")
    file.write_text(f"query {QUERY}\nadmin {QUERY}\n")
    with pytest.raises(AuthConfigError, match=r"tokens:2: the same token is configured twice"):
        parse_tokens("", str(file))
    assert parse_tokens("", "") == []


# -- TLS ---------------------------------------------------------------------------------------
def _certificates(folder):
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate, PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject, key, issuer, issuer_key, ca=False, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(stem, cert, key):
        (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue(name("crossrec test CA"), ca_key, name("crossrec test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = issue(name("localhost"), server_key, ca.subject, ca_key, san=san)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = issue(name("a client"), client_key, ca.subject, ca_key)
    write("ca", ca, ca_key)
    write("server", server, server_key)
    write("client", client_cert, client_key)
    return {
        s: (str(folder / f"{s}.pem"), str(folder / f"{s}.key")) for s in ("ca", "server", "client")
    }


def test_tls_serves_clients_that_trust_its_ca_and_refuses_plaintext(tiny_built, tmp_path):
    certs = _certificates(tmp_path)
    tls = TlsConfig(cert_file=certs["server"][0], key_file=certs["server"][1])
    with BackgroundServer(config(tiny_built, tmp_path, tls=tls)) as server:
        secure = Connection(token=QUERY, tls_ca=certs["ca"][0])
        with CrossrecClient(server.target, timeout=10, connection=secure) as c:
            assert len(c.recommend("u", k=2).items) == 2
        with CrossrecClient(server.target, timeout=3, connection=Connection(token=QUERY)) as c:
            assert code_of(lambda: c.recommend("u", k=2)) == "UNAVAILABLE"


def test_tls_with_client_certificates_requires_one(tiny_built, tmp_path):
    certs = _certificates(tmp_path)
    tls = TlsConfig(
        cert_file=certs["server"][0], key_file=certs["server"][1], client_ca_file=certs["ca"][0]
    )
    with BackgroundServer(config(tiny_built, tmp_path, tls=tls)) as server:
        without = Connection(token=QUERY, tls_ca=certs["ca"][0])
        with CrossrecClient(server.target, timeout=3, connection=without) as c:
            assert code_of(lambda: c.recommend("u", k=2)) == "UNAVAILABLE"
        with_cert = Connection(
            token=QUERY,
            tls_ca=certs["ca"][0],
            tls_cert=certs["client"][0],
            tls_key=certs["client"][1],
        )
        with CrossrecClient(server.target, timeout=10, connection=with_cert) as c:
            assert len(c.recommend("u", k=2).items) == 2


def test_made_up_method_names_share_one_label_and_refusal_lines_are_rate_limited(caplog):
    from engine.api.auth import TokenAuth
    from engine.feedback.metrics import Metrics

    metrics = Metrics()
    auth = TokenAuth([(b"q" * 16, "query")], protect_health=False, metrics=metrics)
    with caplog.at_level(logging.INFO, logger="engine.api.auth"):
        for i in range(50):
            auth._refuse(f"Made/Up{i}" + "x" * 500, grpc.StatusCode.UNAUTHENTICATED, "no token")
        auth._refuse("Recommend", grpc.StatusCode.UNAUTHENTICATED, "no token")
    counts = {
        s.labels["method"]: s.value
        for family in metrics.requests.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert counts == {"unknown": 50, "Recommend": 1}  # Recommend's line was not logged...
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 10  # ...only the first ten refusals in the window were
    assert all(len(line) < 200 for line in lines)  # the caller's string is clipped
    assert lines[0].startswith("unknown method 'Made/Up0xxx")


def test_a_refused_call_is_refused_before_its_body_is_read(secured):
    """An unauthenticated body larger than any message the server accepts is still told
    UNAUTHENTICATED: gRPC would answer RESOURCE_EXHAUSTED had the body been received."""
    from crossrec.v1 import recommend_pb2, service_pb2_grpc

    channel = grpc.insecure_channel(
        secured.target, options=[("grpc.max_send_message_length", 64 << 20)]
    )
    stub = service_pb2_grpc.RecommendServiceStub(channel)
    ids = ["x" * 1000] * 8000  # 8 MB, twice the 4 MiB limit
    body = recommend_pb2.RecommendRequest(user_id="u", k=5)
    body.filters.exclude_item_ids.extend(ids)
    for metadata in ((), (("authorization", "Bearer " + "z" * 20),)):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Recommend(body, timeout=10, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as caught:  # a query token is past the check: size applies
        stub.Recommend(body, timeout=10, metadata=(("authorization", f"Bearer {QUERY}"),))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    channel.close()


def test_single_requests_are_held_to_a_smaller_body_than_batches(tiny_built, tmp_path):
    """max_request_bytes for Recommend (and the other single calls), max_message_bytes for
    RecommendBatch and IngestEvents; a body over its method's limit is refused unparsed."""
    from crossrec.v1 import recommend_pb2, service_pb2, service_pb2_grpc

    base = config(tiny_built, tmp_path)
    limits = {"max_request_bytes": 20_000, "max_list_items": 100_000}
    with BackgroundServer(base.with_changes(auth={"tokens": ""}, limits=limits)) as server:
        stub = service_pb2_grpc.RecommendServiceStub(grpc.insecure_channel(server.target))
        body = recommend_pb2.RecommendRequest(user_id="u", k=2)
        body.filters.exclude_item_ids.extend([f"x{i:05d}" for i in range(3_000)])
        assert 20_000 < body.ByteSize() < 4 * 2**20
        with pytest.raises(grpc.RpcError) as caught:
            stub.Recommend(body, timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_request_bytes" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.DeleteUser(service_pb2.DeleteUserRequest(user_id="u" * 30_000), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        batch = recommend_pb2.RecommendBatchRequest(requests=[body])
        assert len(stub.RecommendBatch(batch, timeout=10).responses[0].items) == 2
        small = recommend_pb2.RecommendRequest(user_id="u", k=2)
        assert len(stub.Recommend(small, timeout=10).items) == 2
        counted = server.metrics.registry.get_sample_value(
            "crossrec_requests_total", {"method": "Recommend", "code": "RESOURCE_EXHAUSTED"}
        )
        assert counted == 1


def test_the_hostile_bench_measures_each_attack(tiny_built, tmp_path):
    import json
    import socket

    from clients.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    base = config(tiny_built, tmp_path)
    server_settings = {"port": 0, "metrics_port": metrics_port, "workers": 2, "max_queued": 8}
    with BackgroundServer(base.with_changes(server=server_settings)) as server:
        out = tmp_path / "hostile.json"
        argv = ["bench", "hostile", "--target", server.target, "--token", QUERY]
        argv += ["--metrics", f"http://127.0.0.1:{metrics_port}/metrics"]
        argv += ["--attacks", "brands,metrics,shedding", "--concurrency", "200"]
        assert main([*argv, "--unknown-calls", "60", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["brands"]["batch_codes"] == ["OK"] * 4
    assert result["brands"]["ordinary_during_codes"] == ["OK"]
    assert result["metrics"]["codes"] == {"UNAUTHENTICATED": 30, "UNIMPLEMENTED": 30}
    assert (
        result["metrics"]["metrics_bytes_after"] < result["metrics"]["metrics_bytes_before"] + 2_000
    )
    shedding = result["shedding"]
    assert sum(c["calls"] for c in shedding["codes"].values()) == 200
    assert shedding["client_saw_failed"] > 0
    assert shedding["client_saw_failed"] == shedding["server_counted_failed"]
    assert main(["bench", "hostile", "--attacks", "nope"]) == 2
