#!/usr/bin/env bash
# Bake the Pynomaly service into an app AMI: run as root on the build instance, from a copy of this repository
# (a Packer shell provisioner after a file provisioner, or an EC2 Image Builder component's build phase).
#   deploy/ami/install.sh
# It copies the source to /opt/pynomaly/src and installs it there, editable as the project requires (the
# service reads baselines.yaml beside its code), with the service's dependencies into /opt/pynomaly/venv,
# creates the system user pynomaly, and installs and enables the systemd units without starting them: an
# instance starts them from its user data once /etc/pynomaly/pynomaly.env exists (infra/app_fleet.py).
# Idempotent: a second run reinstalls the same files and changes nothing else. Works without a running systemd
# (chroot builders): enabling a unit only creates links.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
UNITS="$REPO/deploy/systemd"
PREFIX=/opt/pynomaly
SERVICE_USER=pynomaly
# The distribution's interpreter (the project's requires-python), never one on a build user's PATH (pyenv
# under /root): the venv links to it, and the service user must be able to run it.
PYTHON=/usr/bin/python3.11
HARDENED=(pynomaly-api.service pynomaly-worker.service pynomaly-db-credentials.service)
ENABLED=(pynomaly-api.service pynomaly-worker.service pynomaly-db-credentials.timer)

die() {
  echo "install.sh: $*" >&2
  exit 1
}

install_python() {
  "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null && return
  if command -v dnf >/dev/null; then # Amazon Linux 2023
    dnf install -y python3.11 python3.11-pip
  elif command -v apt-get >/dev/null; then # Debian 12 / Ubuntu 24.04 (python3 is 3.11 on Debian 12)
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  else
    die "no dnf or apt-get: install $PYTHON (with venv) first"
  fi
  "$PYTHON" -c 'import venv, ensurepip' || die "$PYTHON (with venv) is still missing after the package install"
}

create_user() {
  getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
  getent passwd "$SERVICE_USER" >/dev/null ||
    useradd --system --gid "$SERVICE_USER" --home-dir "$PREFIX" --no-create-home \
      --shell "$(command -v nologin || echo /sbin/nologin)" "$SERVICE_USER"
}

install_source() {
  install -d -m 0755 -o root -g root "$PREFIX"
  rm -rf "$PREFIX/src.new"
  mkdir "$PREFIX/src.new"
  tar -C "$REPO" --exclude=./.git --exclude='./.venv*' --exclude='./.*_cache' --exclude=./.local-stack \
    --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ -cf - . |
    tar -C "$PREFIX/src.new" --no-same-owner -xf -
  rm -rf "$PREFIX/src"
  mv "$PREFIX/src.new" "$PREFIX/src"
}

install_service() {
  # A venv made from another interpreter is made again; otherwise it is kept and upgraded in place.
  grep -qx "home = ${PYTHON%/*}" "$PREFIX/venv/pyvenv.cfg" 2>/dev/null || "$PYTHON" -m venv --clear "$PREFIX/venv"
  # Owned by root: the service user can run the code, not change it. No pip cache left in the image.
  # The dependencies from the lock (scripts/lock: pinned and hashed), then the project without them.
  local pip=("$PREFIX/venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet)
  "${pip[@]}" --require-hashes --no-deps -r "$PREFIX/src/deploy/requirements/service.lock"
  "${pip[@]}" --no-deps -e "$PREFIX/src[service]"
  "$PREFIX/venv/bin/pip" check || die "the locked dependencies do not satisfy the project's: run scripts/lock"
  runuser -u "$SERVICE_USER" -- "$PREFIX/venv/bin/python" -I -c \
    'import service.api, service.worker, infra.pod_scripts.db_credentials' ||
    die "the service user cannot run $PREFIX/venv"
}

install_ca() {
  # The RDS CA bundle the service verifies the database against (sslmode=verify-full), fetched now: the bake runs
  # where the internet is reachable, the instances need not. RDS_CA_BUNDLE=FILE installs one already fetched.
  "$PYTHON" "$REPO/deploy/rds_ca.py" "$PREFIX/certs/rds-global-bundle.pem" ${RDS_CA_BUNDLE:+--from "$RDS_CA_BUNDLE"} ||
    die "no RDS CA bundle: the bake needs https://truststore.pki.rds.amazonaws.com (or RDS_CA_BUNDLE=FILE)"
}

install_units() {
  local unit
  install -m 0644 -o root -g root "$UNITS"/pynomaly-*.service "$UNITS"/pynomaly-*.timer /etc/systemd/system/
  for unit in "${HARDENED[@]}"; do
    install -D -m 0644 -o root -g root "$UNITS/hardening.conf" "/etc/systemd/system/$unit.d/10-hardening.conf"
  done
  # The user data writes the environment file here at boot.
  install -d -m 0700 -o root -g root /etc/pynomaly
  if [[ -d /run/systemd/system ]]; then systemctl daemon-reload; fi
  systemctl enable "${ENABLED[@]}"
}

[[ $EUID -eq 0 ]] || die "run as root (it creates a user and installs systemd units)"
[[ -f $REPO/pyproject.toml && -d $UNITS ]] || die "$REPO is not a pynomaly-ops checkout (no pyproject.toml)"
[[ $REPO != "$PREFIX/src" ]] || die "run it from a checkout, not from the installed copy $PREFIX/src"
install_python
create_user
install_source
install_service
install_ca
install_units
echo "install.sh: $PREFIX/venv and ${ENABLED[*]} installed (enabled, not started)"
