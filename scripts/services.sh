#!/usr/bin/env bash
# Make sure Redis, RabbitMQ and PostgreSQL accept connections on this machine.
# Uses a running service as it is; starts one that is installed but stopped; otherwise
# says in one sentence which one is missing and the two ways to get it. Exit 1 if any is missing.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # wait_port PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}

missing=0
say_missing() {
  echo "seckill: $1 is not running on 127.0.0.1:$2 and is not installed here: start it with \`docker compose up -d $3\` or install your distribution's \`$4\` package." >&2
  missing=1
}

ensure_redis() {
  port_open 6379 && return 0
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null 2>&1 \
      || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    wait_port 6379 15 && return 0
    echo "seckill: redis-server is installed but did not start on port 6379." >&2; missing=1
  else
    say_missing Redis 6379 redis redis-server
  fi
}

ensure_postgres() {
  port_open 5432 && return 0
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1
    wait_port 5432 30 && return 0
    echo "seckill: PostgreSQL is installed but did not start on port 5432." >&2; missing=1
  else
    say_missing PostgreSQL 5432 postgres postgresql
  fi
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  if command -v rabbitmq-server >/dev/null; then
    rabbitmq-server -detached >/dev/null 2>&1
    if wait_port 5672 90; then
      command -v rabbitmqctl >/dev/null && timeout 60 rabbitmqctl await_startup >/dev/null 2>&1
      return 0
    fi
    echo "seckill: RabbitMQ is installed but did not start on port 5672." >&2; missing=1
  else
    say_missing RabbitMQ 5672 rabbitmq rabbitmq-server
  fi
}

ensure_redis
ensure_postgres
ensure_rabbitmq
exit "$missing"
