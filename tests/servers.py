"""Start real servers for integration tests: PostgreSQL 15, Redis, moto (SQS + S3), and the service itself.

Every server listens on a free loopback port chosen at run time (other suites run
servers at the same time) and keeps its files in a fresh directory under /tmp.
PostgreSQL refuses to run as root, so when the tests run as root its commands run
as the ``postgres`` user (``runuser``) with a data directory owned by that user and
kept out of /root. Waiting is always deadline-bounded polling, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
PG_BIN = Path(os.environ.get("PYNOMALY_PG_BIN", "/usr/lib/postgresql/15/bin"))
REPO_ROOT = Path(__file__).resolve().parent.parent


class ProcessExited(RuntimeError):
    """The server being waited for died: waiting longer cannot help."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``check`` until it returns a truthy value; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except ProcessExited:
            raise
        except Exception as exc:  # not up yet: keep polling until the deadline
            last_error = exc
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def _tempdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class PostgresServer:
    """A throw-away PostgreSQL cluster with an application role and database."""

    def __init__(self, dbname: str = "pynomaly", user: str = "pynomaly", password: str = "pynomaly-test") -> None:
        self.dbname, self.user, self.password = dbname, user, password
        self.port = free_port()
        self.root = _tempdir("pynomaly-pg-")
        self.data, self.sockets, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_root else list(args)
        # cwd: the postgres user may not enter the checkout (CI may clone under /root, mode 700)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd=self.root, **kwargs)

    def _ctl(self, *args: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def init(self) -> PostgresServer:
        self.sockets.mkdir()
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self.root.chmod(0o700)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-sync",
            "--auth-local=trust", "--auth-host=scram-sha-256",
        )  # fmt: skip
        return self

    def enable_tls(self) -> Path:
        """TLS from a throw-away CA, with a server certificate for 127.0.0.1 (what ``sslmode=verify-full``
        checks); call before :meth:`start`. Returns the CA's certificate file."""
        tls = self.root / "tls"
        tls.mkdir()
        (tls / "san.ext").write_text(f"subjectAltName=IP:{LOOPBACK}\n")
        openssl = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        for args in (
            [*openssl, "-x509", "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=pynomaly-test-ca"],
            [*openssl, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={LOOPBACK}"],
            ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt"],
        ):  # fmt: skip
            subprocess.run(args, cwd=tls, check=True, capture_output=True, timeout=60)
        (tls / "server.key").chmod(0o600)
        if self._as_root:
            for name in ("server.key", "server.crt"):
                shutil.chown(tls / name, "postgres", "postgres")
            shutil.chown(tls, "postgres", "postgres")
        self._tls = f" -c ssl=on -c ssl_cert_file={tls / 'server.crt'} -c ssl_key_file={tls / 'server.key'}"
        return tls / "ca.crt"

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses={LOOPBACK} -c fsync=off"
        self._ctl("-l", str(self.log), "-o", options + getattr(self, "_tls", ""), "start")
        return self

    def restart(self) -> None:
        """A fast restart: every client connection is cut, as in a failover."""
        self._ctl("-l", str(self.log), "-m", "fast", "restart")  # -l again: else the server inherits our pipe

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ctl("-m", "fast", "stop")

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run(
            str(PG_BIN / "psql"), "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", dbname,
            "-v", "ON_ERROR_STOP=1", "-Atc", sql,
        ).stdout  # fmt: skip

    def create_app_database(self) -> PostgresServer:
        self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
        self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")
        return self

    def dsn(self, **extra: str) -> str:
        """A libpq conninfo as the service gets it (the local stack lists several hosts)."""
        params = {
            "host": LOOPBACK, "port": str(self.port), "dbname": self.dbname, "user": self.user,
            "password": self.password, "target_session_attrs": "read-write", **extra,
        }  # fmt: skip
        return " ".join(f"{k}={v}" for k, v in params.items())

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ProcessServer:
    """A server run as a child process in its own process group, stopped with SIGTERM."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.log = root / f"{name}.log"

    def _spawn(self, cmd: list[str], env: Mapping[str, str] | None = None) -> None:
        with open(self.log, "ab") as log:
            env = None if env is None else dict(env)
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)  # type: ignore[union-attr]

    def stop(self, timeout_s: float = 20) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; return the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class PortServer(ProcessServer):
    """A server of ours listening on one free loopback port, with its own directory under /tmp."""

    def __init__(self, name: str) -> None:
        super().__init__(name, _tempdir(f"pynomaly-{name}-"))
        self.port = free_port()

    def _start(self, cmd: list[str], timeout_s: float) -> None:
        self._spawn(cmd)
        wait_until(lambda: port_open(LOOPBACK, self.port), timeout_s, f"{self.name} on {self.port}\n{self.tail()}")


class RedisServer(PortServer):
    def __init__(self) -> None:
        super().__init__("redis")

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> RedisServer:
        cmd = ["redis-server", "--port", str(self.port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
        self._start([*cmd, "--dir", str(self.root)], timeout_s=20)
        return self


@dataclass(frozen=True)
class AwsResources:
    endpoint_url: str
    queue_url: str
    dead_letter_queue_url: str
    bucket: str


class MotoServer(PortServer):
    """moto in server mode: SQS and S3 over HTTP, as the service talks to AWS."""

    region = "us-east-1"

    def __init__(self) -> None:
        super().__init__("moto")

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> MotoServer:
        self._start([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)], timeout_s=30)
        return self

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service, endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    def provision(self, name: str, visibility_timeout_s: int, max_receive_count: int) -> AwsResources:
        """A queue whose redrive policy moves a message to its DLQ after ``max_receive_count`` receives."""
        sqs, s3 = self.client("sqs"), self.client("s3")
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
        attributes = {"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": redrive}
        queue_url = sqs.create_queue(QueueName=f"{name}-jobs", Attributes=attributes)["QueueUrl"]
        s3.create_bucket(Bucket=f"{name}-artifacts")
        return AwsResources(self.endpoint_url, queue_url, dlq_url, f"{name}-artifacts")

    def aws_env(self) -> dict[str, str]:
        return {"AWS_DEFAULT_REGION": self.region, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return reply.status == 200
    return False


class ServiceProcess(ProcessServer):
    """``python -m service.api`` or ``python -m service.worker`` with the given environment."""

    def __init__(self, module: str, env: Mapping[str, str], root: Path) -> None:
        super().__init__(module.rsplit(".", 1)[-1] + f"-{free_port()}", root)
        self.module = module
        self.env = {**os.environ, **env}

    @property
    def base_url(self) -> str:
        return f"http://{self.env['PYNOMALY_HOST']}:{self.env['PYNOMALY_PORT']}"

    def start(self, wait_for: str | None = "/health", timeout_s: float = 60) -> ServiceProcess:
        self._spawn([sys.executable, "-m", self.module], env=self.env)
        if wait_for:
            url = self.base_url + wait_for
            wait_until(lambda: self._alive() and http_ok(url), timeout_s, f"{url}\n{self.tail()}", interval_s=0.1)
        return self

    def _alive(self) -> bool:
        if not self.running():
            raise ProcessExited(f"{self.module} exited with {self.proc.returncode}:\n{self.tail()}")  # type: ignore[union-attr]
        return True
