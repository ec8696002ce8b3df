"""Exit 0 when both PostgreSQL and Redis answer at the given URLs (used by `make test-postgres`)."""

import sys

import psycopg
import redis


def main() -> int:
    pg_url, redis_url = sys.argv[1], sys.argv[2]
    try:
        psycopg.connect(pg_url.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        print(f"unreachable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
