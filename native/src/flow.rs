//! Step 4, flow: one TCP connection joined to one QUIC stream, bytes copied both ways
//! with backpressure. Each direction ends on its own: a TCP EOF becomes the stream's FIN
//! and a stream FIN becomes a TCP half-close. A TCP reset becomes RESET_STREAM +
//! STOP_SENDING, and a stream reset (or STOP_SENDING) becomes a TCP reset (SO_LINGER 0).
//! The same code serves both directions (capture side and delivery side).
//! (To be written; see `run_pipe`.)
