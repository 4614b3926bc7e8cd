#!/bin/sh
# Render a node's YAML from a template, for a pod of a StatefulSet
# (deploy/kubernetes/): dynomite-render-config TEMPLATE OUTPUT
#
# The template's @NAME@ placeholders are replaced by:
#   @POD_NAME@       the pod's name, e.g. dynomite-dc1-rack2-1 (env POD_NAME)
#   @POD_NAMESPACE@  its namespace (env POD_NAMESPACE)
#   @TOKENS@         its token: ordinal * (2^32 / RACK_SIZE), the ordinal
#                    being the number after the pod name's last '-'
#                    (the launcher's rack_tokens does the same)
# and @DATACENTER@, @RACK@ by env DYNOMITE_DC and DYNOMITE_RACK.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 TEMPLATE OUTPUT" >&2
    exit 2
fi
template=$1
output=$2

fail() {
    echo "dynomite-render-config: $*" >&2
    exit 1
}

: "${POD_NAME:?POD_NAME must be set (downward API metadata.name)}"
: "${POD_NAMESPACE:?POD_NAMESPACE must be set (downward API metadata.namespace)}"
: "${RACK_SIZE:?RACK_SIZE must be set: the replicas of this rack's StatefulSet}"
: "${DYNOMITE_DC:?DYNOMITE_DC must be set}"
: "${DYNOMITE_RACK:?DYNOMITE_RACK must be set}"

ordinal=${POD_NAME##*-}
case $ordinal in
    ''|*[!0-9]*) fail "cannot read an ordinal from pod name '$POD_NAME'" ;;
esac
case $RACK_SIZE in
    ''|*[!0-9]*|0) fail "RACK_SIZE must be a positive number, got '$RACK_SIZE'" ;;
esac
[ "$ordinal" -lt "$RACK_SIZE" ] || fail "ordinal $ordinal is not below RACK_SIZE $RACK_SIZE"

tokens=$(( ordinal * (4294967296 / RACK_SIZE) ))

tmp="$output.tmp.$$"
sed -e "s|@POD_NAME@|$POD_NAME|g" \
    -e "s|@POD_NAMESPACE@|$POD_NAMESPACE|g" \
    -e "s|@TOKENS@|$tokens|g" \
    -e "s|@DATACENTER@|$DYNOMITE_DC|g" \
    -e "s|@RACK@|$DYNOMITE_RACK|g" \
    "$template" > "$tmp"
if grep -n '@[A-Z_]*@' "$tmp" >&2; then
    rm -f "$tmp"
    fail "$template: placeholders left unreplaced (above)"
fi
mv "$tmp" "$output"
echo "dynomite-render-config: $output for $POD_NAME (rack $DYNOMITE_RACK, dc $DYNOMITE_DC, token $tokens)"
