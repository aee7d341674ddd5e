#!/usr/bin/env python3
# Canary senders that are not plain TCP clients:
#   canary.py tcp-marked <ip> <port> <mark> <canary>   TCP from a socket carrying SO_MARK (the daemon's own mark)
#   canary.py udp <ip> <port> <canary> <count>          UDP datagrams carrying the canary
#   canary.py udp-listen <ip> <port> <seconds>          counts UDP datagrams received
# Prints one JSON line.
import json, socket, sys, time

SO_MARK = 36
kind = sys.argv[1]
if kind == 'tcp-marked':
    ip, port, mark, canary = sys.argv[2], int(sys.argv[3]), int(sys.argv[4], 0), sys.argv[5].encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    s.settimeout(3)
    try:
        s.connect((ip, port))
        s.sendall(canary * 10)
        print(json.dumps({'outcome': 'connected'}))
    except OSError as e:
        print(json.dumps({'outcome': type(e).__name__, 'error': str(e)}))
elif kind == 'udp':
    ip, port, canary, count = sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), int(sys.argv[5])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, errors = 0, 0
    for _ in range(count):
        try:
            s.sendto(canary * 4, (ip, port))
            sent += 1
        except OSError:
            errors += 1  # EPERM: the OUTPUT drop rule refused it locally
        time.sleep(0.01)
    print(json.dumps({'sent': sent, 'errors': errors}))
elif kind == 'udp-listen':
    ip, port, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    print(json.dumps({'event': 'ready'}), flush=True)
    s.settimeout(0.2)
    got, end = 0, time.time() + seconds
    while time.time() < end:
        try:
            s.recv(65535)
            got += 1
        except socket.timeout:
            pass
    print(json.dumps({'received': got}))
