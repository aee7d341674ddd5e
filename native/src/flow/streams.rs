//! The stream halves of a flow (reset if the pipe is dropped unfinished) and the mapping
//! of TCP and stream errors to how the flow ends.
use crate::app_error;
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use std::io;

/// Why the copying stopped.
pub(super) enum End {
    /// Both directions ended with a FIN.
    Closed,
    /// Reset the stream both ways with `code`, reset the TCP socket, report `why`.
    Reset(u32, String),
}

/// The stream halves, reset with app_error::SHUTDOWN if the pipe is dropped before it ends
/// (the runtime shutting down): quinn would otherwise finish an unfinished stream on drop,
/// and the other side would take a cut stream for a complete one.
pub(super) struct Streams {
    pub(super) send: SendStream,
    pub(super) recv: RecvStream,
    pub(super) armed: bool,
}

impl Streams {
    pub(super) fn reset(&mut self, code: u32) {
        let code = VarInt::from_u32(code);
        // Either half may be gone already (finished and acknowledged, or reset by the peer).
        let _ = self.send.reset(code);
        let _ = self.recv.stop(code);
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if self.armed {
            self.reset(app_error::SHUTDOWN);
        }
    }
}

/// A name for an application error code, for outcomes and logs.
fn code_text(code: VarInt) -> String {
    let name = match u32::try_from(code.into_inner()) {
        Ok(app_error::TCP_RESET) => "tcp reset",
        Ok(app_error::CONNECT_FAILED) => "connect failed",
        Ok(app_error::DENIED) => "denied",
        Ok(app_error::BAD_HEADER) => "bad header",
        Ok(app_error::SHUTDOWN) => "shutdown",
        Ok(app_error::IDENTITY) => "identity",
        Ok(app_error::IDLE_TIMEOUT) => "idle timeout",
        Ok(app_error::LIMIT) => "limit",
        _ => "unknown",
    };
    format!("{:#x} ({name})", code.into_inner())
}

fn peer_code(code: VarInt) -> u32 {
    u32::try_from(code.into_inner()).unwrap_or(app_error::TCP_RESET)
}

/// This host's TCP end failed: the stream is reset with TCP_RESET.
pub(super) fn tcp_failed(op: &str, e: &io::Error) -> End {
    let why = match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => "tcp reset".to_string(),
        _ => format!("tcp {op} failed: {e}"),
    };
    End::Reset(app_error::TCP_RESET, why)
}

pub(super) fn write_failed(e: WriteError) -> End {
    match e {
        WriteError::Stopped(code) => End::Reset(
            peer_code(code),
            format!("peer stopped the stream: {}", code_text(code)),
        ),
        WriteError::ConnectionLost(e) => {
            End::Reset(app_error::TCP_RESET, format!("tunnel lost: {e}"))
        }
        e => End::Reset(app_error::TCP_RESET, format!("stream write failed: {e}")),
    }
}

pub(super) fn read_failed(e: ReadError) -> End {
    match e {
        ReadError::Reset(code) => End::Reset(
            peer_code(code),
            format!("peer reset the stream: {}", code_text(code)),
        ),
        ReadError::ConnectionLost(e) => {
            End::Reset(app_error::TCP_RESET, format!("tunnel lost: {e}"))
        }
        e => End::Reset(app_error::TCP_RESET, format!("stream read failed: {e}")),
    }
}
