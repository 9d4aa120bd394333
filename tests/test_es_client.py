"""The shipper's Elasticsearch client and its settings: several nodes, fail-over, credentials,
ENABLE_ELK_INTEGRATION, and ELASTICSEARCH_URL in a config file."""
from __future__ import annotations

import base64
import http.server
import json
import logging
import datetime
import socket
import ssl
import threading

import pytest

from exporter.config import load_settings
from exporter.errors import ConfigError, LoggingSetupError
from exporter.metrics import Metrics
from exporter.sinks import SINKS
from exporter.sinks._es_client import ElasticsearchError, new_client
from exporter.sinks.elasticsearch import ElasticsearchSink
from tests.probes import wait_until
from tests.test_shipping import _line, _search


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class StandIn:
    """A loopback node that answers every ``_bulk`` as created and keeps what it was sent
    (over TLS with ``tls=(certificate file, key file)``)."""

    def __init__(self, status: int = 200, tls: tuple[str, str] | None = None):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.requests.append((self.command, self.path, dict(self.headers), body))
                data = json.dumps({"errors": False} if status < 300 else {"error": {"type": "security_exception"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            do_POST = do_PUT = _answer  # noqa: N815 (http.server's naming)

            def log_message(self, format, *args):  # noqa: A002
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self.url = self.url.replace("http://", "https://")
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def bulks(self) -> list:
        return [request for request in self.requests if request[1].startswith("/_bulk")]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def stand_ins():
    made: list[StandIn] = []

    def make(status: int = 200, tls: tuple[str, str] | None = None) -> StandIn:
        made.append(StandIn(status, tls))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _shipping(tmp_path, environ: dict, **flags):
    return load_settings({"STATE_DIR": str(tmp_path / "state"), "LOG_SHIP_INTERVAL": 0.1, **flags},
                         environ=environ).shipping


# ---------------------------------------------------------------- several nodes


def test_one_node_down_and_one_up_every_record_arrives(elasticsearch, tmp_path):
    url = f"{_closed_port_url()},{elasticsearch.url}"
    sink = ElasticsearchSink(_shipping(tmp_path, {"ELASTICSEARCH_URL": url, "ELASTICSEARCH_NAMESPACE": "failover"}),
                             Metrics())
    for number in range(300):
        sink.submit(_line(number), logging.INFO)
    sink.close(10)
    assert [hit["message"] for hit in _search(elasticsearch.url, "logs-bot-failover")] == \
        [f"record {n}" for n in range(300)]
    stats = sink.stats()
    assert stats["shipped"] == 300 and stats["retried"] == 0 and stats["spooled"] == 0  # no batch waited


def test_requests_are_spread_over_the_nodes_in_turn(stand_ins, tmp_path):
    first, second = stand_ins(), stand_ins()
    client = new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": f"{first.url}, {second.url}"}))
    for _ in range(6):
        assert client.bulk(body=b'{"create":{}}\n{}\n', filter_path="errors") == {"errors": False}
    assert len(first.bulks()) == len(second.bulks()) == 3


def test_a_node_that_refused_goes_last_until_it_has_had_a_rest(stand_ins, tmp_path):
    alive = stand_ins()
    client = new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": f"{_closed_port_url()},{alive.url}"}))
    for _ in range(4):
        client.bulk(body=b"{}\n{}\n", filter_path="errors")
    assert len(alive.bulks()) == 4
    assert list(client._nodes.away) == [0]  # the closed port, refused once, is tried after the other


def test_an_error_status_raises_without_asking_another_node(stand_ins, tmp_path):
    refusing, other = stand_ins(401), stand_ins()
    client = new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": f"{refusing.url},{other.url}"}))
    with pytest.raises(ElasticsearchError, match="HTTP 401 security_exception"):
        client.bulk(body=b"{}\n{}\n", filter_path="errors")
    assert other.requests == []


def test_every_node_down_is_an_error_and_the_records_are_spooled(tmp_path):
    url = f"{_closed_port_url()},{_closed_port_url()}"
    sink = ElasticsearchSink(_shipping(tmp_path, {"ELASTICSEARCH_URL": url}), Metrics())
    for number in range(20):
        sink.submit(_line(number), logging.INFO)
    sink.close(0.5)
    assert sink.stats()["spooled"] == 20 and sink.stats()["shipped"] == 0


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize("environ, expected", [
    ({"ELASTICSEARCH_API_KEY": "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="},
     "ApiKey VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="),
    ({"ELASTICSEARCH_API_KEY": "VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"},  # id:key, encoded for the header
     "ApiKey " + base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode()),
    ({"ELASTICSEARCH_USERNAME": "shipper", "ELASTICSEARCH_PASSWORD": "hunter2-pw"},
     "Basic " + base64.b64encode(b"shipper:hunter2-pw").decode()),
])
def test_credentials_are_sent_on_every_request_and_shown_nowhere(stand_ins, tmp_path, environ, expected):
    node = stand_ins()
    shipping = _shipping(tmp_path, {"ELASTICSEARCH_URL": node.url, "ELASTICSEARCH_NAMESPACE": "auth", **environ})
    sink = ElasticsearchSink(shipping, Metrics())
    sink.submit(_line(1), logging.INFO)
    sink.close(5)
    assert sink.stats()["shipped"] == 1
    assert [(method, path.split("?")[0]) for method, path, _, _ in node.requests] == \
        [("PUT", "/_index_template/logs-bot"), ("POST", "/_bulk")]
    assert {headers["Authorization"] for _, _, headers, _ in node.requests} == {expected}
    secret = environ.get("ELASTICSEARCH_API_KEY") or environ["ELASTICSEARCH_PASSWORD"]
    assert secret not in repr(shipping) and secret not in repr(sink._node.client)


def test_credentials_in_the_url_are_sent_as_basic_and_left_out_of_the_url(stand_ins, tmp_path):
    node = stand_ins()
    url = node.url.replace("http://", "http://shipper:p%40ss@")
    new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": url})).bulk(body=b"{}\n{}\n", filter_path="errors")
    (_, _, headers, _), = node.requests
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"shipper:p@ss").decode()


def test_a_node_that_wants_credentials_it_did_not_get_spools_the_records(stand_ins, tmp_path):
    node = stand_ins(401)
    sink = ElasticsearchSink(_shipping(tmp_path, {"ELASTICSEARCH_URL": node.url}), Metrics())
    sink.submit(_line(1), logging.INFO)
    wait_until(lambda: sink.stats()["retried"] >= 1)
    sink.close(0.5)
    assert sink.stats()["spooled"] == 1 and sink.stats()["shipped"] == 0


@pytest.mark.parametrize("environ, key", [
    ({"ELASTICSEARCH_USERNAME": "shipper"}, "ELASTICSEARCH_USERNAME"),
    ({"ELASTICSEARCH_PASSWORD": "hunter2-pw"}, "ELASTICSEARCH_PASSWORD"),
    ({"ELASTICSEARCH_API_KEY": "hunter2-pw", "ELASTICSEARCH_USERNAME": "shipper",
      "ELASTICSEARCH_PASSWORD": "x"}, "ELASTICSEARCH_API_KEY"),
    ({"ELASTICSEARCH_URL": "http://u:hunter2-pw@es:9200", "ELASTICSEARCH_API_KEY": "k"}, "ELASTICSEARCH_URL"),
])
def test_credentials_that_do_not_go_together_are_refused_at_load(environ, key):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert caught.value.key == key and "hunter2-pw" not in str(caught.value)


def test_the_password_may_come_from_a_file(tmp_path):
    (tmp_path / "pw").write_text("hunter2-pw\n")
    settings = load_settings(environ={"ELASTICSEARCH_USERNAME": "shipper",
                                      "ELASTICSEARCH_PASSWORD_FILE": str(tmp_path / "pw")})
    assert settings.shipping.password.get() == "hunter2-pw"
    assert "hunter2-pw" in settings.secret_values()
    assert ("ELASTICSEARCH_PASSWORD", "****", f"file {tmp_path / 'pw'} (via ELASTICSEARCH_PASSWORD_FILE)") \
        in settings.describe()


def _self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself (its own authority), and its key: PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsstack test node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "node.crt", directory / "node.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_an_https_node_is_trusted_through_elasticsearch_ca_certs_only(stand_ins, tmp_path):
    tls = _self_signed(tmp_path)
    node = stand_ins(tls=tls)
    trusting = new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": node.url, "ELASTICSEARCH_CA_CERTS": tls[0]}))
    assert trusting.bulk(body=b"{}\n{}\n", filter_path="errors") == {"errors": False}
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):  # the system's authorities do not know it
        new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": node.url})).bulk(body=b"{}\n{}\n", filter_path="errors")
    assert len(node.bulks()) == 1


def test_a_ca_file_that_cannot_be_read_stops_the_start_naming_it(tmp_path):
    missing = tmp_path / "missing.crt"
    with pytest.raises(LoggingSetupError, match=f"ELASTICSEARCH_CA_CERTS={missing}: cannot load"):
        new_client(_shipping(tmp_path, {"ELASTICSEARCH_URL": "https://127.0.0.1:9200",
                                        "ELASTICSEARCH_CA_CERTS": str(missing)}))


# ---------------------------------------------------------------- ENABLE_ELK_INTEGRATION and config files


def test_elk_integration_ships_to_the_design_documents_default_url():
    shipping = load_settings(environ={"ENABLE_ELK_INTEGRATION": "true"}).shipping
    assert shipping.enabled is True and shipping.url.get() == "http://localhost:9200"


def test_a_url_alone_turns_shipping_on_and_elk_integration_off_turns_it_off(tmp_path):
    assert load_settings(environ={"ELASTICSEARCH_URL": "http://es:9200"}).shipping.enabled is True
    assert load_settings(environ={}).shipping.enabled is False and load_settings(environ={}).shipping.url is None
    off = load_settings({"STATE_DIR": str(tmp_path / "state")},
                        environ={"ELASTICSEARCH_URL": "http://es:9200", "ENABLE_ELK_INTEGRATION": "false"})
    assert off.shipping.enabled is False
    assert SINKS["elasticsearch"](off, Metrics()) is None  # no sink made, nothing imported


@pytest.mark.parametrize("suffix, content", [
    (".toml", 'ENABLE_ELK_INTEGRATION = true\nELASTICSEARCH_URL = "http://es-1:9200,http://es-2:9200"\n'),
    (".py", 'ENABLE_ELK_INTEGRATION = True\nELASTICSEARCH_URL = "http://es-1:9200,http://es-2:9200"\n'),
])
def test_a_url_without_credentials_may_be_written_in_a_config_file_and_is_shown(tmp_path, suffix, content):
    config = tmp_path / f"config{suffix}"
    config.write_text(content)
    settings = load_settings(config_file=config, environ={})
    assert settings.shipping.url.get() == "http://es-1:9200,http://es-2:9200"
    assert ("ELASTICSEARCH_URL", "http://es-1:9200,http://es-2:9200", f"file {config}") in settings.describe()
    assert "http://es-1:9200,http://es-2:9200" not in settings.secret_values()  # not masked in log lines


def test_a_url_with_credentials_in_a_config_file_is_refused_unshown(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('ELASTICSEARCH_URL = "http://es-1:9200,https://elastic:hunter2-pw@es-2"\n')
    with pytest.raises(ConfigError, match="read from the environment only") as caught:
        load_settings(config_file=config, environ={})
    assert caught.value.key == "ELASTICSEARCH_URL" and "hunter2-pw" not in str(caught.value)


def test_a_url_with_credentials_from_the_environment_is_masked():
    settings = load_settings(environ={"ELASTICSEARCH_URL": "https://elastic:hunter2-pw@es.example"})
    assert ("ELASTICSEARCH_URL", "****", "environment") in settings.describe()
    assert "https://elastic:hunter2-pw@es.example" in settings.secret_values()


def test_a_list_with_one_unusable_url_is_refused_unshown():
    with pytest.raises(ConfigError, match="ELASTICSEARCH_URL.*several separated by commas") as caught:
        load_settings(environ={"ELASTICSEARCH_URL": "http://es-1:9200,es-2.internal"})
    assert "es-2.internal" not in str(caught.value)
