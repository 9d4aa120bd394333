#!/bin/sh
# Start Alertmanager with alertmanager.yml after filling ${NAME} / ${NAME:-default} from the
# environment (secrets stay out of the repository and out of the image).
#
#   entrypoint.sh [alertmanager flags...]        render, then exec alertmanager
#   entrypoint.sh --render-only OUT [IN]         render IN (default: beside this script) to OUT
#
# Comment lines are copied as they are. A ${NAME} without a default that is not set is an
# error naming NAME. The rendered file is
# written with mode 0600 (it holds the Telegram token).
set -eu

here=$(cd "$(dirname "$0")" && pwd)

render() {
    umask 077
    awk '
    /^[ \t]*#/ { print; next }
    {
        line = $0
        out = ""
        while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}/)) {
            token = substr(line, RSTART + 2, RLENGTH - 3)
            name = token; fallback = ""; has_default = 0
            split_at = index(token, ":-")
            if (split_at > 0) {
                name = substr(token, 1, split_at - 1)
                fallback = substr(token, split_at + 2)
                has_default = 1
            }
            if (name in ENVIRON && ENVIRON[name] != "") {
                value = ENVIRON[name]
            } else if (has_default) {
                value = fallback
            } else {
                printf "alertmanager config: %s is not set\n", name > "/dev/stderr"
                exit 2
            }
            out = out substr(line, 1, RSTART - 1) value
            line = substr(line, RSTART + RLENGTH)
        }
        print out line
    }' "$1" > "$2"
}

if [ "${1:-}" = "--render-only" ]; then
    render "${3:-$here/alertmanager.yml}" "$2"
    exit 0
fi

rendered=${ALERTMANAGER_RENDERED_CONFIG:-/alertmanager/alertmanager.rendered.yml}
render "$here/alertmanager.yml" "$rendered"

# Drop any --config.file given by the caller: the rendered file is the configuration.
for arg in "$@"; do
    shift
    case "$arg" in
        --config.file=*) ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec /bin/alertmanager --config.file="$rendered" "$@"
