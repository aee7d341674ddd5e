# A download client for fault case 1b that reports how its connection ended, as the
# kernel says: "reset" (recv raised ECONNRESET), "eof" (recv returned b"": a FIN) or
# another error. Node's net client cannot be used for this: after a partial read,
# libuv takes an EPOLLHUP for the end of the stream and emits 'end' without reading the
# pending ECONNRESET (seen here: a Node client got a clean end in 2 of 30 SIGKILLs of a
# plain server socket with SO_LINGER 0; a blocking recv() got the reset in 30 of 30).
# Usage: reset-reader.py IP PORT REQUEST_BYTES TIMEOUT_S; prints one JSON line.
import json, socket, sys, time

ip, port, request, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
got = 0
outcome = None
start = time.time()
try:
    c = socket.create_connection((ip, port), timeout=timeout)
    c.sendall(b"q" * request)
    c.shutdown(socket.SHUT_WR)
    while outcome is None:
        try:
            d = c.recv(1 << 16)
        except ConnectionResetError:
            outcome = "ECONNRESET"
            break
        except socket.timeout:
            outcome = "TIMEOUT"
            break
        if not d:
            outcome = "eof"
        got += len(d)
except OSError as e:
    outcome = outcome or (e.__class__.__name__ + ": " + str(e))
print(json.dumps({"replyBytes": got, "outcome": outcome, "ms": round((time.time() - start) * 1000)}), flush=True)
