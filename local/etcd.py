"""etcd with authentication on, as a production DCS runs: a ``root`` user for the stack's own tools and a
``patroni`` user that may read and write only Patroni's keys (``/<namespace>/``).

Everything goes through etcd's HTTP gateway (``/v3/...``, JSON), so no password is ever on a command line.
:func:`ensure_auth` sets it up idempotently once the quorum is there and before Patroni starts;
:func:`call` is a request of the stack's tools, with a token of the member asked (cached, renewed when etcd
says it expired).
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any

import httpx

from local.layout import Layout
from local.programs import ETCD_MEMBERS, PATRONI_NAMESPACE

ROOT_USER = "root"
PATRONI_USER = "patroni"
PATRONI_ROLE = "patroni"
TIMEOUT_S = 2.0
# etcd's simple tokens live 300 s after their last use (--auth-token-ttl); renewed well before.
TOKEN_REUSE_S = 120.0

NOT_ENABLED = "authentication is not enabled"
BAD_PASSWORD = "authentication failed"
BAD_TOKEN = "invalid auth token"
NO_USER = "user name is empty"
EXISTS = "already exists"

_tokens: dict[str, tuple[str, float]] = {}  # member URL -> (token, when issued)
_lock = threading.Lock()


class EtcdError(RuntimeError):
    """etcd refused a request; the message is etcd's."""


class ForeignEtcd(EtcdError):
    """etcd has authentication on with another root password: its data is not this stack's (a verdict)."""


def member_urls(layout: Layout) -> list[str]:
    return [f"http://{layout.zone_address(z)}:{layout.ports['etcd']}" for z in ETCD_MEMBERS.values()]


def _post(url: str, path: str, body: dict[str, Any], token: str | None = None, timeout_s: float = TIMEOUT_S) -> Any:
    headers = {"Authorization": token} if token else {}
    reply = httpx.post(f"{url}/v3/{path}", json=body, headers=headers, timeout=timeout_s)
    try:
        data = reply.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise EtcdError(f"{path}: HTTP {reply.status_code}: {reply.text[:200]}")
    if reply.status_code != 200 or "error" in data:
        raise EtcdError(f"{path}: {data.get('error') or data.get('message') or reply.text[:200]}")
    return data


def authenticate(url: str, user: str, password: str) -> str:
    return str(_post(url, "auth/authenticate", {"name": user, "password": password})["token"])


def _token(url: str, layout: Layout, fresh: bool = False) -> str | None:
    """A root token of member ``url`` (None: authentication is not enabled there)."""
    with _lock:
        cached = _tokens.get(url)
    if cached and not fresh and time.monotonic() - cached[1] < TOKEN_REUSE_S:
        return cached[0]
    try:
        token = authenticate(url, ROOT_USER, layout.secrets["etcd_root_password"])
    except EtcdError as exc:
        if NOT_ENABLED in str(exc):
            return None
        raise
    with _lock:
        _tokens[url] = (token, time.monotonic())
    return token


def call(url: str, path: str, body: dict[str, Any], layout: Layout, timeout_s: float = TIMEOUT_S) -> Any:
    """A request to the member at ``url`` as etcd's root user (a new token once when etcd refuses the old)."""
    try:
        return _post(url, path, body, _token(url, layout), timeout_s)
    except EtcdError as exc:
        if BAD_TOKEN not in str(exc) and NO_USER not in str(exc):
            raise
    return _post(url, path, body, _token(url, layout, fresh=True), timeout_s)


def _logs_in(url: str, user: str, password: str) -> bool:
    try:
        authenticate(url, user, password)
    except EtcdError:
        return False
    return True


def _tolerating_exists(url: str, path: str, body: dict[str, Any], token: str | None) -> None:
    try:
        _post(url, path, body, token)
    except EtcdError as exc:
        if EXISTS not in str(exc):
            raise


def _prefix_end(prefix: str) -> str:
    """The range end covering every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ensure_auth(layout: Layout) -> dict[str, Any]:
    """Users, Patroni's role and authentication on; idempotent, and the recorded passwords put back each time.

    Raises ForeignEtcd when authentication is on with another root password (an etcd not made by this layout)."""
    url = member_urls(layout)[0]
    try:
        token = _token(url, layout, fresh=True)
    except EtcdError as exc:
        if BAD_PASSWORD in str(exc):
            raise ForeignEtcd(
                f"etcd at {url} has authentication on with another root password than the one recorded in"
                f" {layout.state_dir / Layout.FILE}: its data is not this stack's (`local down --purge` to start again)"
            ) from None
        raise
    was_enabled = token is not None
    prefix = f"/{PATRONI_NAMESPACE}/"
    users = {ROOT_USER: layout.secrets["etcd_root_password"], PATRONI_USER: layout.secrets["etcd_patroni_password"]}
    for role in (ROOT_USER, PATRONI_ROLE):
        _tolerating_exists(url, "auth/role/add", {"name": role}, token)
    perm = {"permType": "READWRITE", "key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
    _post(url, "auth/role/grant", {"name": PATRONI_ROLE, "perm": perm}, token)
    for user, password in users.items():
        try:
            _post(url, "auth/user/add", {"name": user, "password": password}, token)
        except EtcdError as exc:
            if EXISTS not in str(exc):
                raise
            if not (was_enabled and _logs_in(url, user, password)):  # a change of password ends its tokens
                _post(url, "auth/user/changepw", {"name": user, "password": password}, token)
    _post(url, "auth/user/grant", {"user": ROOT_USER, "role": ROOT_USER}, token)
    _post(url, "auth/user/grant", {"user": PATRONI_USER, "role": PATRONI_ROLE}, token)
    if not was_enabled:
        _post(url, "auth/enable", {}, token)
    with _lock:
        _tokens.clear()
    return {"enabled": True, "was_enabled": was_enabled, "users": sorted(users)}
