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
    else
        echo "==> ok in ${took}s: $*"
    fi
    return "$status"
}

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
    [[ $(id -u) -eq 0 ]] ||
        die "not root, so cannot install it: run \`sudo apt-get install redis-server\` (or set REDIS_SERVER_BIN to a redis-server binary) and try again"
    command -v apt-get >/dev/null 2>&1 ||
        die "no apt-get here: install redis-server with this system's package manager (or set REDIS_SERVER_BIN) and try again"
    # The package may also start a system service on port 6379; the tests
    # never use it.
    step 15m env DEBIAN_FRONTEND=noninteractive apt-get update
    step 15m env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
    command -v redis-server >/dev/null 2>&1 || die "apt-get installed redis-server, yet it is not on PATH ($PATH)"
    echo "==> redis-server: $(command -v redis-server): $(redis-server --version)"
}

# The TLS tests make their certificates with the openssl command.
ensure_openssl() {
    if command -v openssl >/dev/null 2>&1; then
        echo "==> openssl: $(command -v openssl): $(openssl version)"
        return
    fi
    echo "==> openssl is missing; the TLS tests need it to make certificates"
    [[ $(id -u) -eq 0 ]] ||
        die "not root, so cannot install it: run \`sudo apt-get install openssl\` and try again"
    command -v apt-get >/dev/null 2>&1 ||
        die "no apt-get here: install openssl with this system's package manager and try again"
    step 15m env DEBIAN_FRONTEND=noninteractive apt-get update
    step 15m env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl
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
