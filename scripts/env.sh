# Sourced by every script that runs cargo. One persistent target dir outside
# the clone, so the ~35-minute cold build of Kuzu's C++ happens once per
# machine; the cmake/ccache settings live in .cargo/config.toml.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kuzu-sync/target}"
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-10G}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-/}"
