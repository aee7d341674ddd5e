// Fail closed when the daemon dies: while a tunnelled TCP socket's direction towards
// its application is still open, SO_LINGER 0 makes the kernel answer an unplanned
// close (the daemon killed mid-stream) with a reset. Without it the kernel sends a
// FIN and the application takes a cut stream for a complete one. Cleared just before
// the daemon ends that direction itself, so a normal close still flushes and FINs.
import type net from 'node:net';
import { tryAddon } from '../native/addon.js';

const addon = tryAddon();
/** The setting last applied to a socket: capture/ and StreamPipe.attach both ask for it, one syscall does. */
const applied = new WeakMap<net.Socket, boolean>();

export function setAbortiveClose(socket: net.Socket, on: boolean): void {
  if (applied.get(socket) === on) return;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!addon || typeof fd !== 'number' || fd < 0) return; // no addon (unit tests) or already closed
  try {
    addon.setAbortiveClose(fd, on);
    applied.set(socket, on); // only once it is really set: a later call may still apply it
  } catch {
    // the socket is already being torn down: nothing left to protect
  }
}
