#!/bin/sh
# usage: run.sh BIN [extra route setup]
set -e
S=stallr-s; C=stallr-c
ip netns del $S 2>/dev/null || true; ip netns del $C 2>/dev/null || true
ip netns add $S; ip netns add $C
ip link add srs netns $S type veth peer name src netns $C
ip -n $S addr add 198.18.0.1/15 dev srs; ip -n $C addr add 198.18.0.2/15 dev src
for x in "$S srs" "$C src"; do set -- $x; ip -n $1 link set $2 up; ip -n $1 link set lo up; done
[ -n "$ROUTE" ] && ip -n $S route add $ROUTE
ip netns exec $S $BIN run --backend udp --interface srs --subnet 198.18.0.0/15 --range 198.18.1.0-198.18.255.250 > /tmp/stall-server.log 2>&1 &
SP=$!
sleep 1
ip netns exec $C python3 $(dirname $0)/odd.py ${N:-3000}
sleep 0.3
echo "== ss -uamn (server ns), 0.3 s after the odd traffic"; ip netns exec $S ss -uamn 'sport = :67'; ip netns exec $S ss -wamn
echo "== /proc/net/udp (server ns): tx_queue and drops"; ip netns exec $S cat /proc/net/udp
echo "== ip neigh (server ns): states"; ip -n $S neigh | awk '{print $NF}' | sort | uniq -c
ip -n $S neigh | head -5
echo "== send failures in the log by errno"; grep -oE "(failed|send_packet): .*" /tmp/stall-server.log | sort | uniq -c
sleep 3.5
echo "== 3.8 s later: ss -uamn"; ip netns exec $S ss -uamn 'sport = :67'; ip netns exec $S ss -wamn
ip -n $S neigh | awk '{print $NF}' | sort | uniq -c
kill $SP; wait $SP 2>/dev/null || true
ip netns del $S; ip netns del $C
