#!/bin/sh
# busybox udhcpc event script for lab guests (udhcpc -s THIS_FILE).
#
# Configures the interface from the lease, and writes resolv.conf ONLY to
# $SKIFF_RESOLV_CONF (the namespace's own /etc/netns/<ns>/resolv.conf), never to
# the host's /etc/resolv.conf (namespaces share the file system). The file is
# rewritten in place (truncate + write): `ip netns exec` bind-mounts it, and a
# rename would break that mount. Each event is also recorded in $SKIFF_LEASE_FILE
# as key=value lines. It never sets the hostname: the UTS namespace is the host's.
#
# Both the router option (3) and classless routes (121) are applied: the lab's
# router sends its default route in option 3 and extra routes in option 121.
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

event="${1:-}"
iface="${interface:-eth0}"

fail() {
    echo "udhcpc.sh: $*" >&2
    exit 1
}

resolv="${SKIFF_RESOLV_CONF:-}"
[ -n "$resolv" ] || fail "SKIFF_RESOLV_CONF is not set; refusing to touch any resolv.conf"
case "$resolv" in
    /*) ;;
    *) fail "SKIFF_RESOLV_CONF must be an absolute path (got $resolv)" ;;
esac
real="$(readlink -m -- "$resolv")"
if [ "$resolv" = /etc/resolv.conf ] || [ "$real" = /etc/resolv.conf ] || [ "$real" = "$(readlink -m /etc/resolv.conf)" ]; then
    fail "SKIFF_RESOLV_CONF points at the host's /etc/resolv.conf; refusing"
fi
lease_file="${SKIFF_LEASE_FILE:-}"

# prefix_of MASK: dotted netmask -> prefix length.
prefix_of() {
    printf '%s\n' "$1" | tr '.' '\n' | {
        bits=0
        while read -r octet; do
            case "$octet" in
                255) bits=$((bits + 8)) ;;
                254) bits=$((bits + 7)) ;;
                252) bits=$((bits + 6)) ;;
                248) bits=$((bits + 5)) ;;
                240) bits=$((bits + 4)) ;;
                224) bits=$((bits + 3)) ;;
                192) bits=$((bits + 2)) ;;
                128) bits=$((bits + 1)) ;;
                *) ;;
            esac
        done
        echo "$bits"
    }
}

is_ipv4() {
    case "$1" in
        *[!0-9.]* | "") return 1 ;;
    esac
    return 0
}

is_cidr() {
    case "$1" in
        */*) ;;
        *) return 1 ;;
    esac
    is_ipv4 "${1%/*}" || return 1
    case "${1#*/}" in
        *[!0-9]* | "") return 1 ;;
    esac
    return 0
}

# words LIST: one word per line (lists are split here, never by unquoted expansion).
words() {
    printf '%s\n' "$1" | tr -s ' \t' '\n\n' | sed '/^$/d'
}

write_lease() {
    [ -n "$lease_file" ] || return 0
    tmp="$lease_file.tmp.$$"
    {
        printf 'event=%s\n' "$event"
        printf 'interface=%s\n' "$iface"
        printf 'ip=%s\n' "${ip:-}"
        printf 'prefix=%s\n' "${prefix:-}"
        printf 'router=%s\n' "${router:-}"
        printf 'dns=%s\n' "${dns:-}"
        printf 'domain=%s\n' "${domain:-}"
        printf 'staticroutes=%s\n' "${staticroutes:-}"
        printf 'mtu=%s\n' "${mtu:-}"
        printf 'lease=%s\n' "${lease:-}"
        printf 'serverid=%s\n' "${serverid:-}"
        printf 'time=%s\n' "$(date +%s)"
    } > "$tmp" && mv -f -- "$tmp" "$lease_file"
}

resolv_content() {
    echo "# written by the lab's udhcpc.sh for $iface"
    search_list="$(words "${domain:-} ${search:-}" | awk '!seen[$0]++' | tr '\n' ' ' \
        | sed 's/ *$//')"
    if [ -n "$search_list" ]; then
        echo "search $search_list"
    fi
    words "${dns:-}" | while read -r server; do
        if is_ipv4 "$server"; then
            echo "nameserver $server"
        fi
    done
}

write_resolv() {
    content="$(resolv_content)"
    # '>' truncates and writes the same inode, so the bind mount keeps showing it.
    printf '%s\n' "$content" > "$resolv"
}

# wanted_routes: "DEST GW" lines; the default route from option 3, then option 121.
wanted_routes() {
    first_router="$(words "${router:-}" | head -n 1)"
    if [ -n "$first_router" ] && is_ipv4 "$first_router"; then
        echo "default $first_router"
    fi
    if [ -n "${staticroutes:-}" ]; then
        words "$staticroutes" | paste -d ' ' - - | while read -r dest gw; do
            if [ "$dest" = 0.0.0.0/0 ]; then
                dest=default
            fi
            if { [ "$dest" = default ] || is_cidr "$dest"; } && is_ipv4 "$gw"; then
                echo "$dest $gw"
            else
                echo "udhcpc.sh: ignoring bad static route '$dest' via '$gw'" >&2
            fi
        done
    fi
}

# apply_routes: install the wanted routes (proto dhcp), then drop our stale ones.
apply_routes() {
    wanted="$(wanted_routes)"
    printf '%s\n' "$wanted" | while read -r dest gw; do
        [ -n "$dest" ] || continue
        if [ "$gw" = 0.0.0.0 ]; then
            ip -4 route replace "$dest" dev "$iface" proto dhcp
        else
            ip -4 route replace "$dest" via "$gw" dev "$iface" proto dhcp
        fi
    done
    keep="$(printf '%s\n' "$wanted" | awk '{print $1}')"
    ip -4 route show dev "$iface" proto dhcp | awk '{print $1}' | while read -r dest; do
        if ! printf '%s\n' "$keep" | grep -qxF -- "$dest"; then
            ip -4 route del "$dest" dev "$iface" proto dhcp
        fi
    done
}

case "$event" in
    deconfig)
        ip -4 route flush dev "$iface" proto dhcp 2>/dev/null || true
        ip -4 addr flush dev "$iface"
        ip link set dev "$iface" up
        write_lease
        ;;
    bound | renew)
        prefix="${mask:-}"
        if [ -z "$prefix" ] && [ -n "${subnet:-}" ]; then
            prefix="$(prefix_of "$subnet")"
        fi
        [ -n "$prefix" ] || prefix=32
        is_ipv4 "${ip:-}" || fail "no usable address in the lease (ip='${ip:-}')"
        if [ -n "${mtu:-}" ]; then
            ip link set dev "$iface" mtu "$mtu" || echo "udhcpc.sh: cannot set mtu $mtu" >&2
        fi
        # Drop other addresses (a changed lease), keep ours without a flap.
        ip -4 -o addr show dev "$iface" | awk '{print $4}' | while read -r old; do
            if [ "$old" != "$ip/$prefix" ]; then
                ip -4 addr del "$old" dev "$iface"
            fi
        done
        if [ -n "${broadcast:-}" ]; then
            ip -4 addr replace "$ip/$prefix" broadcast "$broadcast" dev "$iface"
        else
            ip -4 addr replace "$ip/$prefix" broadcast + dev "$iface"
        fi
        ip link set dev "$iface" up
        apply_routes
        write_resolv
        write_lease
        ;;
    leasefail | nak)
        echo "udhcpc.sh: $event ${message:-}" >&2
        write_lease
        ;;
    *)
        ;;
esac
exit 0
