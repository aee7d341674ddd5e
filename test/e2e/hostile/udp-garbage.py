#!/usr/bin/env python3
# Hostile datagrams at a QUIC port, as fast as one socket sends them:
#   udp-garbage.py <ip> <port> <count> <seed> [pcap] [mode]
# mode "mixed" (default): random bytes, QUIC-looking long and short headers, datagrams from
# the pcap (UDP payloads towards ip:port) replayed verbatim and truncated. mode "initials":
# only well-formed-looking QUIC v1 Initials padded to 1200 bytes (what would make a server
# allocate). Prints one JSON line with what was sent, by kind.
import json, random, socket, struct, sys

ip, port, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pcap = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != '-' else None
mode = sys.argv[6] if len(sys.argv) > 6 else 'mixed'
rng = random.Random(seed)


def captured(path):
    """UDP payloads towards ip:port in a classic pcap (Ethernet link type)."""
    out = []
    with open(path, 'rb') as f:
        data = f.read()
    endian = '<' if data[:4] == b'\xd4\xc3\xb2\xa1' else '>'
    off = 24
    want = socket.inet_aton(ip)
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + 'IIII', data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(pkt) < 42 or pkt[12:14] != b'\x08\x00' or pkt[23] != 17:
            continue
        ihl = (pkt[14] & 0x0F) * 4
        udp = 14 + ihl
        if pkt[30:34] != want or struct.unpack('>H', pkt[udp + 2:udp + 4])[0] != port:
            continue
        out.append(pkt[udp + 8:])
    return out


def initial(version=1):
    dcid = rng.randbytes(rng.randint(8, 20))
    scid = rng.randbytes(rng.randint(0, 20))
    head = bytes([0xC0 | rng.randint(0, 3)]) + struct.pack('>I', version) + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    head += b'\x00'  # token length 0
    body_len = 1200 - len(head) - 2
    return head + struct.pack('>H', 0x4000 | body_len) + rng.randbytes(body_len)


def random_bytes():
    return rng.randbytes(rng.randint(1, 1400))


def short_header():
    return bytes([0x40 | rng.randint(0, 0x3F)]) + rng.randbytes(rng.randint(20, 1300))


def long_header_small():
    return bytes([0x80 | rng.randint(0, 0x7F)]) + struct.pack('>I', rng.choice([1, 0, 0x1A2A3A4A, rng.getrandbits(32)])) + rng.randbytes(rng.randint(0, 300))


replays = captured(pcap) if pcap else []


def replay():
    return rng.choice(replays)


def truncated():
    p = rng.choice(replays)
    return p[:rng.randint(1, max(1, len(p) - 1))]


if mode == 'initials':
    kinds = [('initial', initial)]
else:
    kinds = [('random', random_bytes), ('short', short_header), ('longSmall', long_header_small), ('initial', initial)]
    if replays:
        kinds += [('replay', replay), ('truncated', truncated)]

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
sock.setblocking(True)
sent = {name: 0 for name, _ in kinds}
errors = 0
for i in range(count):
    name, make = kinds[i % len(kinds)]
    try:
        sock.sendto(make(), (ip, port))
        sent[name] += 1
    except OSError:
        errors += 1  # e.g. ENOBUFS or ICMP-driven ECONNREFUSED: keep going
print(json.dumps({'sent': sum(sent.values()), 'byKind': sent, 'errors': errors, 'captured': len(replays), 'srcPort': sock.getsockname()[1]}))
