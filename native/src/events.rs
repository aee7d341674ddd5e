//! What the data plane tells the control plane's logs: tunnel up/down, refusals with
//! their reasons, errors, and (with debug logging) per-flow summaries. Events queue
//! here, bounded, and the daemon takes them in batches (`DataPlane::takeEvents`), then
//! logs each with pino under its component. Nothing is sent per packet.
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::Mutex;

/// Events held while nobody takes them; past this they are counted and dropped.
const MAX_QUEUED: usize = 20_000;

#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Serialize, Debug, Clone)]
pub struct Event {
    pub level: Level,
    /// The log's `component` field: capture, inbound, tunnel, quic-listener.
    pub component: &'static str,
    pub msg: String,
    pub fields: Map<String, Value>,
}

#[derive(Default)]
pub struct Events {
    queue: Mutex<(Vec<Event>, u64)>,
}

impl Events {
    pub fn emit(
        &self,
        level: Level,
        component: &'static str,
        msg: impl Into<String>,
        fields: Value,
    ) {
        let fields = match fields {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => Map::from_iter([("value".to_string(), other)]),
        };
        let Ok(mut q) = self.queue.lock() else { return };
        if q.0.len() >= MAX_QUEUED {
            q.1 += 1;
            return;
        }
        q.0.push(Event {
            level,
            component,
            msg: msg.into(),
            fields,
        });
    }

    /// Everything queued since the last call, plus a note of what was dropped.
    pub fn take(&self) -> Vec<Event> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        let mut out = std::mem::take(&mut q.0);
        if q.1 > 0 {
            let dropped = std::mem::take(&mut q.1);
            out.push(Event {
                level: Level::Warn,
                component: "dataplane",
                msg: "events dropped: the daemon did not take them in time".into(),
                fields: Map::from_iter([("dropped".to_string(), Value::from(dropped))]),
            });
        }
        out
    }
}

/// Builds an event's fields: `fields!{"peer" => name, "reason" => why}`.
#[macro_export]
macro_rules! fields {
    ($($k:literal => $v:expr),* $(,)?) => {
        serde_json::json!({ $($k: $v),* })
    };
}
