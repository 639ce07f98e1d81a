#!/usr/bin/env bash
# Shared set-up for .ci/test and .ci/demo: Python venv, PostgreSQL, Redis on a fresh Debian.
# Sourced, not run.
log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq; _APT_UPDATED=1; fi
  as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_python() {
  # The test extra is installed too: the demo and the tests share one venv.
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "installing Python 3.11+"
    apt_install python3 python3-venv python3-dev
  fi
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
  fi
  local stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    log "installing mistral-sidecar and test dependencies"
    .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
    .venv/bin/python -c 'import proxy, mistralai.client, psycopg, redis' 
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -q -h 127.0.0.1 -p 5432 || { log "PostgreSQL did not start"; exit 1; }
}

ensure_postgres_access() {
  # The tests connect over TCP as user postgres. Trust auth works as is; a stock Debian install
  # wants a password over TCP, so give postgres one and hand it to libpq.
  if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then :
  else
    export PGPASSWORD="${PGPASSWORD:-sidecar-test}"
    if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
      log "setting a password for the postgres role (test machine only)"
      as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD '$PGPASSWORD'\"" >/dev/null
    fi
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test'
  fi
}

ensure_redis() {
  if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then return; fi
  if ! command -v redis-server >/dev/null 2>&1; then
    log "installing Redis"
    apt_install redis-server
  fi
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 40); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && return; sleep 0.25; done
  log "Redis did not start"; exit 1
}

