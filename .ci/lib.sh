# Shared by .ci/run and .ci/test (sourced, not run): announces each step,
# bounds its run time, and makes sure the tools the steps need are there.

# step LIMIT COMMAND...: runs COMMAND under `timeout LIMIT` and says what it
# runs, how long it took and how it ended. `timeout` signals the whole
# process group, so test binaries and the servers they started go too.
step() {
    local limit=$1
    shift
    echo "==> $* (time limit $limit)"
    local start=$SECONDS status=0
    timeout --kill-after=60s "$limit" "$@" || status=$?
    local took=$((SECONDS - start))
    if [[ $status -eq 124 || $status -eq 137 ]]; then
        echo "==> TIMED OUT after ${took}s (limit $limit): $*" >&2
    elif [[ $status -ne 0 ]]; then
        echo "==> FAILED with status $status after ${took}s: $*" >&2
        resources >&2
    else
        echo "==> ok in ${took}s: $*"
    fi
    return "$status"
}

# What the machine has left: a link or build that fails for want of disk or
# memory says so in the log next to the failure.
resources() {
    echo "==> disk free where the build writes:"
    df -h "${CARGO_TARGET_DIR:-target}" . 2>/dev/null || df -h .
    echo "==> memory (MiB):"
    free -m 2>/dev/null || true
}

# Line tables are all a test failure's backtrace needs; full debug info
# makes the build several times larger on disk and in the linker's memory
# (trybuild links its pass cases against every dependency a second time).
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"

die() {
    echo "==> $*" >&2
    exit 1
}

# The Redis tests start their own redis-server on a free port (see
# tests/support/mod.rs); they fail, never skip, without one. Installs it
# with apt-get when it is missing and we are root.
ensure_redis_server() {
    if [[ -n "${REDIS_SERVER_BIN:-}" ]]; then
        [[ -x "$REDIS_SERVER_BIN" ]] ||
            die "REDIS_SERVER_BIN=$REDIS_SERVER_BIN is not an executable file; point it at redis-server or unset it"
        echo "==> redis-server: $REDIS_SERVER_BIN (from REDIS_SERVER_BIN): $("$REDIS_SERVER_BIN" --version)"
        return
    fi
    if command -v redis-server >/dev/null 2>&1; then
        echo "==> redis-server: $(command -v redis-server): $(redis-server --version)"
        return
    fi
    echo "==> redis-server is missing; the Redis tests need it"
    # The package may also start a system service on port 6379; the tests
    # never use it.
    apt_install redis-server REDIS_SERVER_BIN
    command -v redis-server >/dev/null 2>&1 || die "apt-get installed redis-server, yet it is not on PATH ($PATH)"
    echo "==> redis-server: $(command -v redis-server): $(redis-server --version)"
}

# The Postgres tests (feature `postgres`) run `initdb` and `postgres` from
# the newest /usr/lib/postgresql/<version>/bin (or PG_BIN_DIR) into a temp
# dir on a free port (see tests/support/postgres.rs); they fail, never
# skip, without them. Installs the `postgresql` package when they are
# missing and we are root. Debian may start a system cluster on port 5432
# on install: the tests never use it.
ensure_postgres() {
    local bin
    if [[ -n "${PG_BIN_DIR:-}" ]]; then
        [[ -x "$PG_BIN_DIR/postgres" && -x "$PG_BIN_DIR/initdb" ]] ||
            die "PG_BIN_DIR=$PG_BIN_DIR has no postgres and initdb; point it at their directory or unset it"
        echo "==> postgres: $PG_BIN_DIR (from PG_BIN_DIR): $("$PG_BIN_DIR/postgres" --version)"
        return
    fi
    bin=$(find_postgres_bin)
    if [[ -n "$bin" ]]; then
        echo "==> postgres: $bin: $("$bin/postgres" --version)"
        return
    fi
    echo "==> the Postgres server binaries are missing; the Postgres tests need them"
    apt_install postgresql PG_BIN_DIR
    bin=$(find_postgres_bin)
    [[ -n "$bin" ]] || die "apt-get installed postgresql, yet no /usr/lib/postgresql/*/bin/postgres is there"
    echo "==> postgres: $bin: $("$bin/postgres" --version)"
}

# The memcached tests (feature `memcache`) start their own `memcached`
# (from PATH, or MEMCACHED_BIN) on a free loopback port (see
# tests/support/memcached.rs); they fail, never skip, without it. Installs
# the `memcached` package when it is missing and we are root. Debian may
# start a system memcached on port 11211 on install: the tests never use it.
ensure_memcached() {
    if [[ -n "${MEMCACHED_BIN:-}" ]]; then
        [[ -x "$MEMCACHED_BIN" ]] ||
            die "MEMCACHED_BIN=$MEMCACHED_BIN is not an executable file; point it at memcached or unset it"
        echo "==> memcached: $MEMCACHED_BIN (from MEMCACHED_BIN): $("$MEMCACHED_BIN" -V)"
        return
    fi
    if command -v memcached >/dev/null 2>&1; then
        echo "==> memcached: $(command -v memcached): $(memcached -V)"
        return
    fi
    echo "==> memcached is missing; the memcached tests need it"
    apt_install memcached MEMCACHED_BIN
    command -v memcached >/dev/null 2>&1 || die "apt-get installed memcached, yet it is not on PATH ($PATH)"
    echo "==> memcached: $(command -v memcached): $(memcached -V)"
}

# apt_install PACKAGE [VARIABLE]: installs PACKAGE with apt-get when we are
# root and have it, or dies saying how to install it (or that VARIABLE can
# point at the binary instead). The package lists are fetched once a run.
apt_install() {
    local package=$1 or=${2:+ (or set $2)}
    [[ $(id -u) -eq 0 ]] ||
        die "not root, so cannot install $package: run \`sudo apt-get install $package\`$or and try again"
    command -v apt-get >/dev/null 2>&1 ||
        die "no apt-get here: install $package with this system's package manager$or and try again"
    if [[ -z "${APT_LISTS_FETCHED:-}" ]]; then
        step 15m env DEBIAN_FRONTEND=noninteractive apt-get update
        APT_LISTS_FETCHED=1
    fi
    step 15m env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"
}

# The newest /usr/lib/postgresql/<version>/bin with a server in it, or
# nothing.
find_postgres_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5n | tail -n 1)
    if [[ -n "$dir" && -x "$dir/postgres" && -x "$dir/initdb" ]]; then
        echo "$dir"
    fi
}

# The TLS tests make their certificates with the openssl command.
ensure_openssl() {
    if command -v openssl >/dev/null 2>&1; then
        echo "==> openssl: $(command -v openssl): $(openssl version)"
        return
    fi
    echo "==> openssl is missing; the TLS tests need it to make certificates"
    apt_install openssl
    command -v openssl >/dev/null 2>&1 || die "apt-get installed openssl, yet it is not on PATH ($PATH)"
}

# cargo, with rustfmt and clippy: a Rust toolchain (edition 2024, so Debian's
# packaged rustc is too old) must be installed beforehand; the components
# are added through rustup when they are missing.
ensure_rust_tools() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo is not on PATH: install a Rust toolchain (https://rustup.rs) first"
    ensure_cargo_subcommand fmt rustfmt
    ensure_cargo_subcommand clippy clippy
    echo "==> $(cargo --version), $(cargo fmt --version), $(cargo clippy --version)"
}

# ensure_cargo_subcommand SUBCOMMAND COMPONENT
ensure_cargo_subcommand() {
    cargo "$1" --version >/dev/null 2>&1 && return
    command -v rustup >/dev/null 2>&1 ||
        die "\`cargo $1\` is missing and there is no rustup to add it: install the $2 component"
    step 10m rustup component add "$2"
}
