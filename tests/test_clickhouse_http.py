"""Every running service has a ClickHouse HTTP interface (HTTPS, listed in its ``endpoints``)
that the official Python client, clickhouse-connect, uses as it uses ClickHouse itself."""

from __future__ import annotations

import base64
import bz2
import contextlib
import gzip
import json
import lzma
import socket
import ssl
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import httpx2 as httpx
import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.external import ExternalData
from fastapi.testclient import TestClient

from keyhouse.clickhouse_http.encoding import choose
from keyhouse.config import Settings
from keyhouse.state import AppState
from tests.conftest import Org
from tests.services import clickhouse_round_trip, create, stop, wait_for

pytestmark = [pytest.mark.services, pytest.mark.one_database]  # (tests/conftest.py)

LOOPBACK = [{"source": "127.0.0.1/32", "description": "this machine"}]


@contextlib.contextmanager
def _connected(
    settings: Settings, endpoint: dict[str, Any], password: str, **options: Any
) -> Iterator[Client]:
    client = _connect(settings, endpoint, password, **options)
    try:
        yield client
    finally:
        client.close()


def _connect(settings: Settings, endpoint: dict[str, Any], password: str, **options: Any) -> Client:
    return clickhouse_connect.get_client(
        host=endpoint["host"],
        port=endpoint["port"],
        username=endpoint["username"],
        password=password,
        secure=True,
        ca_cert=str(settings.data_dir / "tls" / "ca.pem"),
        **options,
    )


@pytest.fixture
def running(client: TestClient, org: Org) -> tuple[dict[str, Any], str]:
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    return service, created["password"]


def test_clickhouse_connect_creates_inserts_and_reads_back(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, password = running
    [endpoint] = service["endpoints"]
    assert endpoint["protocol"] == "https"
    assert endpoint["username"] == "default"
    with _connected(settings, endpoint, password, compress="lz4") as ch:
        clickhouse_round_trip(ch)


def test_a_wrong_password_is_refused(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, _ = running
    with pytest.raises(DatabaseError) as refused:
        _connect(settings, service["endpoints"][0], "not the password")
    assert "516" in str(refused.value)  # AUTHENTICATION_FAILED


def test_an_address_outside_the_ip_access_list_is_refused(
    client: TestClient, org: Org, settings: Settings
) -> None:
    created = create(client, org, ipAccessList=[{"source": "10.9.8.7/32"}])
    service = wait_for(client, org, created["service"]["id"], "running")
    with pytest.raises(DatabaseError) as refused:
        _connect(settings, service["endpoints"][0], created["password"])
    assert "195" in str(refused.value)  # IP_ADDRESS_NOT_ALLOWED


def _raw(
    settings: Settings,
    endpoint: dict[str, Any],
    password: str,
    *,
    local_address: str | None = None,
    timeout: float = 30,
) -> httpx.Client:
    """An HTTP client of the service's port, as curl is one (from ``local_address`` if given)."""
    verify = ssl.create_default_context(cafile=str(settings.data_dir / "tls" / "ca.pem"))
    return httpx.Client(
        base_url=f"https://{endpoint['host']}:{endpoint['port']}",
        auth=("default", password),
        verify=verify,
        transport=httpx.HTTPTransport(local_address=local_address, verify=verify),
        timeout=timeout,
    )


def test_results_of_many_blocks_are_one_answer_in_every_format(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    """A result larger than one engine block is one document, as a server sends it (each block
    came back as a document of its own: JSON with "Extra data", a header per block, an Arrow
    file the client called invalid, an ArrowStream cut at 65,409 rows with no error)."""
    service, password = running
    rows = 200_000
    sql = f"SELECT number AS n, toString(number) AS s FROM numbers({rows}) ORDER BY n"  # noqa: S608
    with _connected(settings, service["endpoints"][0], password) as ch:
        assert ch.query_arrow(sql).num_rows == rows
        with ch.query_row_block_stream(sql) as blocks:
            assert sum(len(block) for block in blocks) == rows
        assert len(ch.query(sql).result_rows) == rows
    with _raw(settings, service["endpoints"][0], password) as http:
        answer = http.post("/", content=f"{sql} FORMAT JSON".encode())
        assert json.loads(answer.content)["rows"] == rows
        csv = http.post("/", params={"default_format": "CSVWithNames"}, content=sql.encode())
        assert csv.text.count('"n","s"') == 1
        assert csv.text.count("\n") == rows + 1


def test_the_http_protocol_as_curl_speaks_it(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, password = running
    with _raw(settings, service["endpoints"][0], password) as http:
        assert http.get("/ping").text == "Ok.\n"
        # The query in the URL, the body, or both; the FORMAT clause picks the output.
        assert http.get("/", params={"query": "SELECT 1 + 1"}).text == "2\n"
        assert http.post("/", content=b"SELECT 'a' AS x FORMAT JSONEachRow").text == '{"x":"a"}\n'
        created = http.post(
            "/",
            params={"query": "CREATE TABLE t (a UInt8, b String)"},
            content=b"ENGINE = MergeTree ORDER BY a",
        )
        assert created.status_code == 200, created.text
        # An INSERT's data in the body, compressed as clients send it: a frame per block of
        # rows, one after the other (clickhouse-connect's inserts).
        for encoding, pack in (
            ("gzip", gzip.compress),
            ("zstd", zstandard.compress),
            ("lz4", lz4.frame.compress),
        ):
            inserted = http.post(
                "/",
                params={"query": "INSERT INTO t FORMAT TSV"},
                content=pack(b"1\tx\n") + pack(b"2\ty\n"),
                headers={"Content-Encoding": encoding},
            )
            assert inserted.status_code == 200, (encoding, inserted.text)
            summary = json.loads(inserted.headers["x-clickhouse-summary"])
            assert summary["written_rows"] == "2"
        counted = http.post("/", params={"query": "SELECT count() FROM t", "database": "default"})
        assert counted.text == "6\n"
        assert counted.headers["x-clickhouse-format"] == "TabSeparated"
        binary = http.post("/", content=b"SELECT toUInt8(7) AS a FORMAT RowBinaryWithNamesAndTypes")
        assert binary.headers["x-clickhouse-format"] == "RowBinaryWithNamesAndTypes"
        assert binary.content == b"\x01\x01a\x05UInt8\x07"  # 1 column "a" UInt8, value 7
        parameterised = http.post(
            "/", params={"param_b": "x"}, content=b"SELECT count() FROM t WHERE b = {b:String}"
        )
        assert parameterised.text == "3\n"
        # A GET is read-only, as in ClickHouse.
        refused = http.get("/", params={"query": "INSERT INTO t VALUES (9, 'z')"})
        assert refused.status_code == 403
        assert refused.headers["x-clickhouse-exception-code"] == "164"
        # Errors: ClickHouse's code, text and status.
        syntax = http.post("/", content=b"SELEC 1")
        assert (syntax.status_code, syntax.headers["x-clickhouse-exception-code"]) == (400, "62")
        assert "Syntax error" in syntax.text
        # The engine's text as a server writes it, once (chDB's streaming API had prefixed it
        # with "Streaming query failed: "); part-way through a result, it ends the body.
        unknown_table = http.post("/", content=b"SELECT * FROM nope")
        assert unknown_table.text.startswith("Code: 60. DB::Exception: Unknown table")
        midway = http.post("/", content=b"SELECT throwIf(number = 300000) FROM numbers(1000000)")
        assert midway.status_code == 200  # the first rows were already sent
        tail = midway.text.rstrip("\n").rsplit("\n", 1)[1]
        assert tail.startswith("Code: 395. DB::Exception: Value passed to 'throwIf'"), tail
        assert midway.text.count("Code: ") == 1
        assert "Streaming query failed" not in midway.text + unknown_table.text
        unknown = http.post("/", content=b"SELECT 1", headers={"Content-Encoding": "br"})
        assert unknown.status_code == 400
        # Settings pass through; the operator's limits can be lowered, never raised.
        ceiling = settings.query_max_execution_seconds
        shown = http.post(
            "/",
            params={"max_execution_time": str(ceiling * 10), "max_threads": "3"},
            content=b"SELECT name, value FROM system.settings "
            b"WHERE name IN ('max_execution_time', 'max_threads') ORDER BY name",
        )
        assert shown.text == f"max_execution_time\t{ceiling}\nmax_threads\t3\n"
        # A limit that is not a finite number, is below 1 (0 would lift it) or out of range is
        # ClickHouse's own 400, never a 500 (inf used to be a traceback).
        for name, value, code in (
            ("max_execution_time", "inf", "72"),
            ("max_execution_time", "1e400", "72"),
            ("max_execution_time", "nan", "72"),
            ("max_execution_time", "-5", "452"),
            ("max_execution_time", "0", "452"),
            ("max_result_bytes", "0", "452"),
            ("max_memory_usage", "lots", "27"),
            ("max_memory_usage", "99999999999999999999", "70"),
        ):
            refused = http.post("/", params={name: value}, content=b"SELECT 1")
            assert refused.status_code == 400, (name, value, refused.text)
            assert refused.headers["x-clickhouse-exception-code"] == code, (name, value)


def test_the_summary_and_progress_headers_carry_the_engines_figures(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    """X-ClickHouse-Summary as a server sends it: the query's figures when the answer was held
    to its end (``wait_end_of_query``, or an answer with no rows), zeros when the answer's head
    left while the query still ran; ``send_progress_in_http_headers`` adds the progress."""
    service, password = running
    sql = "SELECT number FROM numbers(1000) WHERE number % 3 = 0"

    def figures(answer: httpx.Response, header: str = "x-clickhouse-summary") -> dict[str, int]:
        return {name: int(value) for name, value in json.loads(answer.headers[header]).items()}

    with _raw(settings, service["endpoints"][0], password) as http:
        held = http.post(
            "/",
            params={
                "wait_end_of_query": "1",
                "send_progress_in_http_headers": "1",
                "http_headers_progress_interval_ms": "0",
            },
            content=sql.encode(),
        )
        assert held.status_code == 200, held.text
        summary = figures(held)
        assert summary["read_rows"] == summary["total_rows_to_read"] == 1000
        assert summary["read_bytes"] == 8000
        assert summary["result_rows"] == 334
        assert summary["result_bytes"] == 334 * 8
        assert summary["written_rows"] == summary["written_bytes"] == 0
        assert summary["elapsed_ns"] > 0
        assert figures(held, "x-clickhouse-progress") == summary
        streamed = http.post("/", content=sql.encode())
        assert set(figures(streamed).values()) == {0}  # its head left before the query ended
        assert "x-clickhouse-progress" not in streamed.headers
        table = f"t_{uuid.uuid4().hex[:8]}"
        http.post("/", content=f"CREATE TABLE {table} (n UInt64) ENGINE = Memory".encode())
        inserted = http.post("/", content=f"INSERT INTO {table} {sql}".encode())  # noqa: S608
        assert figures(inserted)["written_rows"] == 334
        # A statement answers no format (clickhouse-connect's command() tells them apart so);
        # a query does, even with no rows.
        assert "x-clickhouse-format" not in inserted.headers
        assert inserted.headers["content-type"] == "text/plain; charset=UTF-8"
        empty = http.post("/", content=f"SELECT n FROM {table} WHERE n > 5000".encode())  # noqa: S608
        assert (empty.content, empty.headers["x-clickhouse-format"]) == (b"", "TabSeparated")
        assert figures(inserted)["written_bytes"] == 334 * 8
        refused = http.post(
            "/",
            params={"send_progress_in_http_headers": "1", "http_headers_progress_interval_ms": "x"},
            content=b"SELECT 1",
        )
        assert refused.status_code == 400
        assert refused.headers["x-clickhouse-exception-code"] == "27"


def test_answers_are_compressed_as_the_server_compresses_them(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    """enable_http_compression=1 and Accept-Encoding: the answer streams compressed in the
    server's choice of encoding; without the setting it is sent as it is."""
    service, password = running
    sql = b"SELECT number, toString(number) FROM numbers(300000)"
    unpack = {
        "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
        "lz4": lz4.frame.decompress,
        "gzip": gzip.decompress,
        "deflate": zlib.decompress,
        "xz": lzma.decompress,
        "bz2": bz2.decompress,
    }
    on = {"enable_http_compression": "1"}
    with _raw(settings, service["endpoints"][0], password) as http:
        plain = http.post("/", content=sql).content
        assert plain.count(b"\n") == 300_000
        for encoding, decompress in unpack.items():
            for params in (on, {**on, "wait_end_of_query": "1"}):
                with http.stream(
                    "POST", "/", params=params, content=sql, headers={"Accept-Encoding": encoding}
                ) as answer:
                    assert answer.headers["content-encoding"] == encoding, params
                    raw = b"".join(answer.iter_raw())
                assert len(raw) < len(plain)
                assert decompress(raw) == plain, (encoding, params)
        # The server's preference among what the client accepts; nothing without the setting.
        chosen = http.post(
            "/", params=on, content=b"SELECT 1", headers={"Accept-Encoding": "gzip, zstd"}
        )
        assert chosen.headers["content-encoding"] == "zstd"
        not_asked = http.post("/", content=b"SELECT 1", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in not_asked.headers
        # An error part-way is in the compressed stream, which still ends properly.
        with http.stream(
            "POST",
            "/",
            params=on,
            content=b"SELECT throwIf(number = 300000) FROM numbers(1000000)",
            headers={"Accept-Encoding": "gzip"},
        ) as answer:
            raw = b"".join(answer.iter_raw())
        assert gzip.decompress(raw).rstrip().endswith(b"(FUNCTION_THROW_IF_VALUE_IS_NON_ZERO)")


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [  # ClickHouse's own negotiation cases (Brotli and Snappy: no library here)
        ("zstd, gzip, br", "zstd"),
        ("br, gzip", "gzip"),
        ("br;q=0, gzip", "gzip"),
        ("zstd;q=0", None),
        ("gzip;q=0.0", None),
        ("gzip;q=0.5, zstd", "zstd"),
        ("X-gzip-custom", None),
        ("my-br-extra, gzip", "gzip"),
        ("zstd; q=0, gzip ; q=1", "gzip"),
        ("GZip", "gzip"),
        ("*", "zstd"),
        ("*;q=0", None),
        ("zstd;q=0, *;q=1", "lz4"),
        ("identity", None),
    ],
)
def test_the_encoding_is_chosen_as_clickhouse_chooses(accept: str, chosen: str | None) -> None:
    assert choose(accept) == chosen


def test_external_data_is_a_table_for_its_query_only(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    """Multipart bodies as clickhouse-connect's external_data and curl -F send them: each part
    is a table for the query in the URL (columns from <name>_structure or <name>_types, format
    from <name>_format), gone after it (clickhouse-connect used to get code 115)."""
    service, password = running
    endpoint = service["endpoints"][0]
    with _connected(settings, endpoint, password) as ch:
        ch.command("CREATE TABLE users (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
        ch.command(
            "INSERT INTO users SELECT number, concat('u', toString(number)) FROM numbers(10)"
        )
        data = ExternalData(
            file_name="wanted.csv", data=b"1\n3\n5\n", fmt="CSV", structure="id UInt32"
        )
        result = ch.query(
            "SELECT name FROM users WHERE id IN (SELECT id FROM wanted) ORDER BY id",
            external_data=data,
        )
        assert result.result_rows == [("u1",), ("u3",), ("u5",)]
    rows = b"".join(b"%d\t{'k':%d}\n" % (n, n) for n in range(200_000))
    with _raw(settings, endpoint, password) as http:
        answered = http.post(
            "/",
            params={
                "query": "SELECT count(), sum(_1), sum(_2['k']) FROM big",
                "big_types": "UInt64,Map(String, UInt64)",
                "session_id": "mine",
            },
            files={"big": ("big.tsv", rows)},
        )
        assert answered.status_code == 200, answered.text
        total = sum(range(200_000))
        assert answered.text == f"200000\t{total}\t{total}\n"
        # The table was the query's only, also on the caller's session.
        gone = http.post("/", params={"session_id": "mine"}, content=b"SELECT * FROM big")
        assert gone.headers["x-clickhouse-exception-code"] == "60", gone.text
        for params, code in (
            ({"query": "SELECT * FROM t"}, "36"),  # no structure nor types
            ({"query": "SELECT 1", "t_types": "UInt8", "t_format": "No Such"}, "36"),
            ({"query": "SELECT * FROM t", "t_structure": "a UInt8"}, "27"),  # bad data: CH's own
        ):
            refused = http.post("/", params=params, files={"t": ("t", b"x\n")})
            assert refused.status_code == 400, (params, refused.text)
            assert refused.headers["x-clickhouse-exception-code"] == code, (params, refused.text)


def test_sessions_keep_their_state_and_take_one_request_at_a_time(
    settings: Settings, running: tuple[dict[str, Any], str]
) -> None:
    service, password = running
    with _raw(settings, service["endpoints"][0], password) as http:
        session = {"session_id": str(uuid.uuid4())}
        made = http.post("/", params=session, content=b"CREATE TEMPORARY TABLE tmp (a UInt8)")
        assert made.status_code == 200, made.text
        http.post("/", params=session, content=b"INSERT INTO tmp VALUES (5)")
        assert http.post("/", params=session, content=b"SELECT a FROM tmp").text == "5\n"
        other = http.post("/", content=b"SELECT a FROM tmp")
        assert other.status_code == 404  # another session does not see it
        # A GET in the session reads (its temporary tables too) but writes no table, and leaves
        # the session as it was for later POSTs (it used to leave it read-only for good).
        kept = b"CREATE TABLE kept (a UInt8) ENGINE = MergeTree ORDER BY a"
        assert http.post("/", params=session, content=kept).status_code == 200
        for statement in (
            "INSERT INTO kept VALUES (6)",
            "DROP TABLE kept",
            "CREATE TABLE x (a UInt8) ENGINE = Memory",
        ):
            refused = http.get("/", params={**session, "query": statement})
            assert refused.status_code == 403, (statement, refused.text)
        read = {**session, "query": "SELECT count() FROM tmp"}
        assert http.get("/", params=read).text == "1\n"
        again = http.post("/", params=session, content=b"INSERT INTO kept VALUES (7)")
        assert again.status_code == 200, again.text
        assert http.post("/", params=session, content=b"SELECT sum(a) FROM kept").text == "7\n"
        # session_timeout, as ClickHouse reads it: a session idle past it is forgotten (each
        # look renews it, so the looks are ever further apart: the engine checks every second).
        short = {"session_id": str(uuid.uuid4()), "session_timeout": "1"}
        http.post("/", params=short, content=b"CREATE TEMPORARY TABLE brief (a UInt8)")
        for idle in (2.5, 4, 8, 15):
            time.sleep(idle)
            forgotten = http.post("/", params=short, content=b"SELECT * FROM brief")
            if forgotten.status_code == 404:
                break
        assert forgotten.headers["x-clickhouse-exception-code"] == "60"  # the table is gone
        for value in ("soon", "-1", "3601"):
            wrong = {**short, "session_timeout": value}
            refused = http.post("/", params=wrong, content=b"SELECT 1")
            code = refused.headers["x-clickhouse-exception-code"]
            assert (refused.status_code, code) == (400, "374"), value


def test_an_idle_service_wakes_on_its_first_request(
    client: TestClient,
    org: Org,
    settings: Settings,
    state: AppState,
    running: tuple[dict[str, Any], str],
) -> None:
    service, password = running
    engines, portal = state.engines, client.portal
    assert engines is not None
    assert portal is not None
    engines._last_used[uuid.UUID(service["id"])] -= 3600  # an hour without a query
    portal.call(engines._idle_once)
    wait_for(client, org, service["id"], "idle")
    with _raw(settings, service["endpoints"][0], password) as http:
        assert http.post("/", content=b"SELECT 42").text == "42\n"
    wait_for(client, org, service["id"], "running")


def test_wrong_passwords_from_one_address_do_not_lock_out_another(
    settings: Settings, client: TestClient, org: Org
) -> None:
    """Failed passwords count per client address (KEYHOUSE_AUTH_FAILURES_PER_IP, 30 a minute)
    and per service only at a much higher threshold: a stranger's guesses cannot lock the port
    for the service's own clients (ten wrong ones from anywhere used to)."""
    everyone = [{"source": "127.0.0.0/8", "description": "loopback"}]
    created = create(client, org, ipAccessList=everyone)
    service = wait_for(client, org, created["service"]["id"], "running")
    [endpoint] = service["endpoints"]
    password = created["password"]
    with (
        _raw(settings, endpoint, "guess", local_address="127.0.0.2") as stranger,
        _raw(settings, endpoint, password, local_address="127.0.0.1") as owner,
    ):
        for _ in range(12):
            wrong = stranger.post("/", content=b"SELECT 1")
            assert wrong.status_code == 401, wrong.text
        right = owner.post("/", content=b"SELECT 1")
        assert right.status_code == 200, right.text
        statuses = {stranger.post("/", content=b"SELECT 1").status_code for _ in range(30)}
        assert 429 in statuses  # the stranger's own address is spent
        right = owner.post("/", content=b"SELECT 1")
        assert right.status_code == 200, right.text
    stop(client, org, service["id"])


def _closed_by_server(sock: socket.socket, within: float = 60) -> bool:
    """True once the server has closed ``sock`` (an end of stream or a reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_one_address_cannot_hold_the_port_with_silent_connections(
    settings: Settings, client: TestClient, org: Org, state: AppState
) -> None:
    """KEYHOUSE_CLICKHOUSE_MAX_CONNECTIONS_PER_ADDRESS counts TCP connections, TLS handshakes
    never finished included (no HTTP server sees those): past it, that address's new
    connection is closed at once, another address is served, and a connection that says
    nothing is closed at KEYHOUSE_CLICKHOUSE_REQUEST_HEAD_TIMEOUT."""
    state.settings = settings.model_copy(
        update={"clickhouse_max_connections_per_address": 3, "clickhouse_request_head_timeout": 3}
    )
    everyone = [{"source": "127.0.0.0/8", "description": "loopback"}]
    created = create(client, org, ipAccessList=everyone)
    service = wait_for(client, org, created["service"]["id"], "running")
    [endpoint] = service["endpoints"]
    address = (endpoint["host"], endpoint["port"])
    silent = [socket.create_connection(address, source_address=("127.0.0.2", 0)) for _ in range(3)]
    try:
        with (
            _raw(settings, endpoint, created["password"], local_address="127.0.0.2") as held,
            _raw(settings, endpoint, created["password"], local_address="127.0.0.1") as other,
        ):
            with pytest.raises(httpx.TransportError):  # closed at once, before TLS
                held.post("/", content=b"SELECT 1")
            answered = other.post("/", content=b"SELECT 1")
            assert answered.status_code == 200, answered.text
        # The silent ones are closed at the deadline, and their address is served again.
        started = time.monotonic()
        assert all(_closed_by_server(sock) for sock in silent)
        assert time.monotonic() - started >= 2  # not before it
        # (the server uncounts a connection when its transport has closed it, a moment after
        # the client saw the end)
        for _ in range(100):
            with _raw(settings, endpoint, created["password"], local_address="127.0.0.2") as again:
                try:
                    status = again.post("/", content=b"SELECT 1").status_code
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
        assert status == 200
    finally:
        for sock in silent:
            sock.close()
    stop(client, org, service["id"])


def test_a_request_head_must_arrive_in_time_its_body_need_not(
    settings: Settings, client: TestClient, org: Org, state: AppState
) -> None:
    """A client that trickles a request's head is closed at the deadline; one whose head came
    in time may stream its body for longer (an insert may take a while)."""
    state.settings = settings.model_copy(update={"clickhouse_request_head_timeout": 2})
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    [endpoint] = service["endpoints"]
    context = ssl.create_default_context(cafile=str(settings.data_dir / "tls" / "ca.pem"))
    credentials = base64.b64encode(f"default:{created['password']}".encode()).decode()

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection((endpoint["host"], endpoint["port"]))
        return context.wrap_socket(raw, server_hostname=endpoint["host"])

    with connect() as trickling:
        trickling.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert _closed_by_server(trickling)
    body = b"SELECT 42"
    with connect() as slow:
        slow.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            + f"Authorization: Basic {credentials}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        for byte in body:  # over three times the deadline
            time.sleep(0.7)
            slow.sendall(bytes([byte]))
        answer = b""
        slow.settimeout(60)
        while chunk := slow.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"\r\n42\n\r\n" in answer  # the one chunk of a chunked answer
    stop(client, org, service["id"])


def test_an_insert_past_the_operators_size_limit_is_refused(
    settings: Settings, client: TestClient, org: Org, state: AppState
) -> None:
    """KEYHOUSE_QUERY_MAX_INSERT_BYTES, counted as the engine receives the data: a body that
    says it is larger is refused before any of it is written; a compressed one that grows
    past it while it streams (a decompression bomb) is cut there."""
    limit = 1024**2
    state.settings = settings.model_copy(update={"query_max_insert_bytes": limit})
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    row = b"x" * 99 + b"\n"
    with _raw(settings, service["endpoints"][0], created["password"]) as http:
        made = http.post("/", content=b"CREATE TABLE t (s String) ENGINE = MergeTree ORDER BY s")
        assert made.status_code == 200, made.text
        insert = {"query": "INSERT INTO t FORMAT TSV"}
        assert http.post("/", params=insert, content=row * 5000).status_code == 200  # 500 kB
        for body, headers in (
            (row * 20_000, {}),  # 2 MB
            (gzip.compress(row * 50_000), {"Content-Encoding": "gzip"}),  # 5 MB, 15 kB sent
        ):
            refused = http.post("/", params=insert, content=body, headers=headers)
            assert refused.status_code == 413, refused.text
            assert refused.headers["x-clickhouse-exception-code"] == "307"
            assert "TOO_MANY_BYTES" in refused.text
        # The query in the body, its data after it: counted as it streams.
        refused = http.post("/", content=b"INSERT INTO t FORMAT TSV\n" + row * 20_000)
        assert refused.status_code == 413, refused.text
        assert http.post("/", content=b"SELECT count() FROM t").text == "5000\n"
    stop(client, org, service["id"])


def test_a_port_serves_at_most_its_connection_limit(
    settings: Settings, client: TestClient, org: Org, state: AppState
) -> None:
    """KEYHOUSE_CLICKHOUSE_MAX_CONNECTIONS: past it, a new connection's request is a 503 at
    once (each open connection costs the process serving every organization)."""
    state.settings = settings.model_copy(update={"clickhouse_max_connections": 2})
    created = create(client, org, ipAccessList=LOOPBACK)
    service = wait_for(client, org, created["service"]["id"], "running")
    endpoint, password = service["endpoints"][0], created["password"]
    with _raw(settings, endpoint, password) as first, _raw(settings, endpoint, password) as second:
        for held in (first, second):  # each keeps its connection open (keep-alive)
            assert held.post("/", content=b"SELECT 1").status_code == 200
        with _raw(settings, endpoint, password) as third:
            assert third.post("/", content=b"SELECT 1").status_code == 503
        second.close()
        for _ in range(50):  # the server sees the closed connection a moment later
            with _raw(settings, endpoint, password) as fourth:
                answered = fourth.post("/", content=b"SELECT 1")
            if answered.status_code == 200:
                break
            time.sleep(0.1)
        assert answered.status_code == 200, answered.text
    stop(client, org, service["id"])
