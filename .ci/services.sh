# Local services the CI scripts need, each started (installed from Debian's packages
# when missing) only when its port does not answer: sourced by .ci/run and .ci/manifests.
# Idempotent: a service already listening is left alone, and nothing is printed.

PG_HOST=127.0.0.1
PG_PORT=5432

# port_up HOST PORT: exit 0 when something accepts TCP connections there.
port_up() {
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
}

# apt_install NAME PACKAGE: install Debian's PACKAGE (NAME for the log line).
apt_install() {
  echo "ci: installing $1 from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$2" >/dev/null
}

# wait_port NAME HOST PORT SECONDS: wait until the port answers; fail naming NAME after SECONDS.
wait_port() {
  for _ in $(seq 1 "$4"); do port_up "$2" "$3" && return 0; sleep 1; done
  echo "ci: $1 did not come up" >&2
  return 1
}

start_postgres() {
  if port_up "$PG_HOST" "$PG_PORT"; then return 0; fi
  echo "ci: PostgreSQL is not answering; starting it"
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
  fi
  if ! port_up "$PG_HOST" "$PG_PORT"; then
    apt_install PostgreSQL postgresql
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    # A fresh cluster wants a password over TCP; give postgres the one CI uses.
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  fi
  wait_port PostgreSQL "$PG_HOST" "$PG_PORT" 30
}

start_rabbitmq() {
  # The event tests need a real broker at 127.0.0.1:5672 (guest/guest).
  if port_up 127.0.0.1 5672; then return 0; fi
  echo "ci: RabbitMQ is not answering; starting it"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install RabbitMQ rabbitmq-server
  fi
  rabbitmq-server -detached || true
  wait_port RabbitMQ 127.0.0.1 5672 60
}

start_redis() {
  # tests/deploy boot the production settings, whose rate limits count in Redis; the
  # machine's Redis at 127.0.0.1:6379 stands in for the render's erx-connector-redis.
  if port_up 127.0.0.1 6379; then return 0; fi
  echo "ci: Redis is not answering; starting it"
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install Redis redis-server
  fi
  # The package may have started one already; otherwise a loopback-only instance that
  # writes no snapshot (the counters are throwaway).
  if ! port_up 127.0.0.1 6379; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  fi
  wait_port Redis 127.0.0.1 6379 30
}
