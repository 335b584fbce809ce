#!/bin/sh
# run.sh dhcpd|kea|ours: each of four DISCOVERs with ciaddr set, and where the OFFER went.
MODE=$1; S=cmp-s; C=cmp-c; D=$(cd $(dirname $0) && pwd); W=$(mktemp -d)
ip netns del $S 2>/dev/null; ip netns del $C 2>/dev/null
ip netns add $S; ip netns add $C
ip link add cmps netns $S type veth peer name cmpc netns $C
ip -n $S addr add 192.0.2.1/24 dev cmps; ip -n $C addr add 192.0.2.2/24 dev cmpc
for x in "$S cmps" "$C cmpc"; do set -- $x; ip -n $1 link set $2 up; ip -n $1 link set lo up; done
sleep 1
case $MODE in
 dhcpd) : > $W/leases; ip netns exec $S dhcpd -4 -f -d -cf $D/dhcpd.conf -lf $W/leases -pf $W/dhcpd.pid cmps > $W/server.log 2>&1 & ;;
 kea) KEA_PIDFILE_DIR=$W KEA_LOCKFILE_DIR=$W ip netns exec $S kea-dhcp4 -c $D/kea.json > $W/server.log 2>&1 & ;;
 ours) ip netns exec $S $BIN run --backend ${BACKEND:-udp} --interface cmps --subnet 192.0.2.0/24 --range 192.0.2.100-192.0.2.200 > $W/server.log 2>&1 & ;;
esac
P=$!; sleep 2
for case in "bcast 192.0.2.50" "bcast 203.0.113.50" "ucast 192.0.2.50" "ucast 203.0.113.50"; do
  set -- $case
  ip netns exec $C timeout 2.5 tcpdump -l -n -e -i cmpc 'udp port 67 or udp port 68 or arp' 2>/dev/null > $W/cap.txt &
  T=$!; sleep 0.5
  ip netns exec $C python3 $D/send_ciaddr.py $1 $2 cmpc
  wait $T
  echo "== DISCOVER $1 ciaddr $2:"; grep -v "BOOTP/DHCP, Request" $W/cap.txt | sed 's/^[0-9:.]* //' | cut -c1-170
done
echo "== server ns neighbours:"; ip -n $S neigh
kill $P; wait $P 2>/dev/null
ip netns del $S; ip netns del $C
