# Sends odd relayed DISCOVERs like tests/odd_traffic.rs (same recipe, python's PRNG).
import random, socket, struct, sys
n = int(sys.argv[1]); random.seed(1)
relay = bytes([198,18,0,2])
def discover(i):
    m = bytearray(236); m[0]=1; m[1]=1; m[2]=6; m[3]=1
    m[4:8] = struct.pack(">I", 0x0dd00000|i); m[24:28] = relay
    m[28:34] = bytes([2,0x0d,0,(i>>16)&255,(i>>8)&255,i&255])
    m += bytes([99,130,83,99,53,1,1,55,3,1,3,6,255]); m += bytes(300-len(m)); return m
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.18.0.2", 67))
for i in range(n):
    m = discover(i); k = i % 4
    if k == 0: m = m[:random.randrange(len(m))]
    elif k == 1:
        for _ in range(1+random.randrange(3)): m[random.randrange(len(m))] = random.randrange(256)
    elif k == 2: m[24+random.randrange(4)] = random.randrange(256)
    else:
        m[12:16] = relay; m[12+random.randrange(4)] = random.randrange(256); m[24:28] = bytes(4)
    s.sendto(bytes(m), ("198.18.0.1", 67))
