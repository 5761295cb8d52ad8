"""The service against a real Redis that requires AUTH, with the password in PYNOMALY_REDIS_PASSWORD_FILE
(as ElastiCache's AUTH token reaches the pods and instances): cache hits with the right password, a rotated
password picked up by new connections, a wrong or missing password never failing a request, and TLS
(rediss://, ElastiCache's transit encryption) against a Redis that only speaks TLS."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from servers import LOOPBACK, PortServer, RedisServer, ServiceProcess, wait_until
from service_testkit import metric_value, own_redis, service_env

from pynomaly_ops import metrics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def redis_server(password: str) -> Iterator[RedisServer]:
    """A Redis of this module's own that refuses unauthenticated clients (``requirepass``)."""
    for server in own_redis():
        redis.Redis.from_url(server.url).config_set("requirepass", password)
        yield server


class TlsRedis(PortServer):
    """Redis listening with TLS only (a self-signed certificate for 127.0.0.1) and requiring a password."""

    def __init__(self, password: str) -> None:
        super().__init__("redis-tls")
        self.password = password
        self.cert, self.key = self.root / "cert.pem", self.root / "key.pem"

    def start(self) -> TlsRedis:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", f"subjectAltName=IP:{LOOPBACK}", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        tls = ["--tls-port", str(self.port), "--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)]
        tls += ["--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"]
        cmd = ["redis-server", "--port", "0", "--bind", LOOPBACK, "--save", "", "--requirepass", self.password]
        self._start([*cmd, *tls, "--dir", str(self.root)], timeout_s=20)
        return self

    def url(self, ca_certs: Path | None = None) -> str:
        # redis-py passes URL query options to the connection: here, which CA signs the server certificate.
        return f"rediss://{LOOPBACK}:{self.port}/0" + (f"?ssl_ca_certs={ca_certs}" if ca_certs else "")


def admin(server: RedisServer, password: str) -> redis.Redis:
    return redis.Redis.from_url(server.url, password=password)


def password_file(directory: Path, text: str) -> Path:
    path = directory / "redis-password"
    path.write_text(text + "\n")  # as `aws secretsmanager ... --output text` writes it
    path.chmod(0o600)
    return path


def start_api(postgres, redis_server, moto, aws, api_key, root: Path, secret_file: Path) -> ServiceProcess:
    env = service_env(
        postgres, redis_server.url, moto, aws, api_key,
        PYNOMALY_REDIS_PASSWORD_FILE=str(secret_file), PYNOMALY_REDIS_RETRY_AFTER_S="0.2",
    )  # fmt: skip
    return ServiceProcess("service.api", env, root).start()


def detect(client: httpx.Client, seed: int) -> httpx.Response:
    reply = client.post("/api/v1/detect", json={"series": [float((i * seed) % 13) for i in range(150)]})
    assert reply.status_code == 200, reply.text
    return reply


def cache_count(client: httpx.Client, result: str) -> float:
    return metric_value(client.get("/metrics").text, metrics.CACHE_REQUESTS, result=result)


def api_client(api: ServiceProcess, api_key: str) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)


def test_password_file_gives_cache_hits_and_follows_rotation(
    postgres, redis_server, moto, aws, api_key, password, tmp_path
):
    secret_file, rotated = password_file(tmp_path, password), secrets.token_urlsafe(24)
    api = start_api(postgres, redis_server, moto, aws, api_key, tmp_path, secret_file)
    try:
        with api_client(api, api_key) as client:
            assert client.get("/ready").json()["checks"]["cache"] == "ok"
            hits_before = cache_count(client, "hit")
            assert detect(client, 3).json()["cached"] is False
            assert detect(client, 3).json()["cached"] is True
            assert cache_count(client, "hit") == hits_before + 1
            assert admin(redis_server, password).dbsize() >= 1

            # Rotation: Redis and the file change, open connections are dropped; the next ones read the new file.
            server = admin(redis_server, password)
            server.config_set("requirepass", rotated)
            secret_file.write_text(rotated + "\n")
            server.client_kill_filter(_type="normal", skipme=True)
            wait_until(lambda: detect(client, 3).json()["cached"], 30, "cache hits with the rotated password")
            assert client.get("/ready").json()["checks"]["cache"] == "ok"
    finally:
        api.stop()
        for current in (rotated, password):  # put the module's password back for the next tests
            with contextlib.suppress(redis.AuthenticationError):
                admin(redis_server, current).config_set("requirepass", password)


def test_wrong_password_file_answers_without_the_cache(postgres, redis_server, moto, aws, api_key, tmp_path):
    api = start_api(postgres, redis_server, moto, aws, api_key, tmp_path, password_file(tmp_path, "not-the-token"))
    try:
        with api_client(api, api_key) as client:
            errors_before = cache_count(client, "error")
            for _ in range(2):  # the same series twice: without the cache the second is no hit
                assert detect(client, 4).json()["cached"] is False
            assert cache_count(client, "error") > errors_before
            ready = client.get("/ready")
            assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
            assert ready.json()["checks"]["cache"].startswith("degraded")
    finally:
        api.stop()


def test_password_file_deleted_at_runtime_is_redis_unavailable(
    postgres, redis_server, moto, aws, api_key, password, tmp_path
):
    secret_file = password_file(tmp_path, password)
    api = start_api(postgres, redis_server, moto, aws, api_key, tmp_path, secret_file)
    try:
        with api_client(api, api_key) as client:
            assert detect(client, 5).status_code == 200
            secret_file.unlink()
            admin(redis_server, password).client_kill_filter(_type="normal", skipme=True)
            # The caller sees only "degraded"; the log names the unreadable file for the operator.
            wait_until(lambda: client.get("/ready").json()["checks"]["cache"] == "degraded", 30, "cache degraded")
            wait_until(lambda: "PYNOMALY_REDIS_PASSWORD_FILE" in api.tail(), 10, "the log names the password file")
            assert detect(client, 5).json()["cached"] is False
    finally:
        api.stop()


def test_missing_password_file_stops_start_up_naming_the_variable(postgres, moto, aws, api_key, tmp_path):
    env = service_env(
        postgres, "redis://127.0.0.1:1/0", moto, aws, api_key, PYNOMALY_REDIS_PASSWORD_FILE=str(tmp_path / "absent")
    )
    api = ServiceProcess("service.api", env, tmp_path).start(wait_for=None)
    assert api.proc.wait(60) == 1
    assert "PYNOMALY_REDIS_PASSWORD_FILE" in api.tail() and "absent" in api.tail()


def test_rediss_url_talks_tls_with_the_password_file(postgres, moto, aws, api_key, password, tmp_path):
    server = TlsRedis(password).start()
    try:
        secret_file = password_file(tmp_path, password)
        env = service_env(
            postgres, server.url(ca_certs=server.cert), moto, aws, api_key,
            PYNOMALY_REDIS_PASSWORD_FILE=str(secret_file),
        )  # fmt: skip
        api = ServiceProcess("service.api", env, tmp_path).start()
        try:
            with api_client(api, api_key) as client:
                assert client.get("/ready").json()["checks"]["cache"] == "ok"
                assert detect(client, 6).json()["cached"] is False
                assert detect(client, 6).json()["cached"] is True
        finally:
            api.stop()
        # The same server is not reachable in plain text: TLS is really in use.
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=LOOPBACK, port=server.port, password=password, socket_timeout=2).ping()
        # And the server certificate is verified: without its CA the connection is refused.
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(server.url(), password=password, socket_timeout=2).ping()
    finally:
        server.cleanup()
