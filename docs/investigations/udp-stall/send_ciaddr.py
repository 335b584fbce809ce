# send.py MODE CIADDR IFACE: one DHCPDISCOVER with ciaddr set, broadcast from 0.0.0.0:68
# (MODE=bcast, raw frame) or unicast from 192.0.2.2:68 to 192.0.2.1:67 (MODE=ucast).
import socket, struct, sys
mode, ciaddr, iface = sys.argv[1], sys.argv[2], sys.argv[3]
mac = bytes([2,0,0,0,0xc1,0x01])
m = bytearray(236); m[0]=1; m[1]=1; m[2]=6; m[4:8]=struct.pack(">I",0xc1add7); m[12:16]=socket.inet_aton(ciaddr); m[28:34]=mac
m += bytes([99,130,83,99,53,1,1,255]); m += bytes(300-len(m)); m=bytes(m)
def csum(b):
    if len(b)%2: b+=b'\0'
    s=sum(struct.unpack("!%dH"%(len(b)//2),b)); s=(s>>16)+(s&0xffff); s+=s>>16; return (~s)&0xffff
if mode == "ucast":
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(("192.0.2.2",68)); s.sendto(m,("192.0.2.1",67))
else:
    src,dst=b'\0'*4,b'\xff'*4
    udp=struct.pack("!HHHH",68,67,8+len(m),0)+m
    c=csum(src+dst+struct.pack("!BBH",0,17,len(udp))+udp) or 0xffff
    udp=udp[:6]+struct.pack("!H",c)+udp[8:]
    ip=struct.pack("!BBHHHBBH4s4s",0x45,0,20+len(udp),0,0,64,17,0,src,dst); ip=ip[:10]+struct.pack("!H",csum(ip))+ip[12:]
    s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); s.bind((iface,0)); s.send(b'\xff'*6+mac+b'\x08\x00'+ip+udp)
