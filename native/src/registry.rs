//! The one registry of open flows, both directions: what a reloaded policy re-judges,
//! what drain waits for, and what stop resets.
use crate::addr::Endpoint;
use crate::flow::FlowCtl;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Captured here, carried to a peer.
    Outbound,
    /// Arrived from a peer, delivered here.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// The facts of an open flow that a policy decides on, and the handle that ends it.
pub struct FlowEntry {
    pub direction: Direction,
    pub peer: String,
    pub source: Endpoint,
    pub destination: Endpoint,
    pub ctl: Arc<FlowCtl>,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    flows: Mutex<HashMap<u64, Arc<FlowEntry>>>,
}

/// Removes its flow from the registry when dropped, however the flow's task ends.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    pub entry: Arc<FlowEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut flows) = self.registry.flows.lock() {
            flows.remove(&self.id);
        }
    }
}

impl Registry {
    pub fn register(self: &Arc<Self>, entry: FlowEntry) -> Registration {
        let id = self.next.fetch_add(1, Relaxed);
        let entry = Arc::new(entry);
        if let Ok(mut flows) = self.flows.lock() {
            flows.insert(id, entry.clone());
        }
        Registration {
            registry: self.clone(),
            id,
            entry,
        }
    }

    pub fn len(&self) -> usize {
        self.flows.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the open flows (the lock is not held while callers act on them).
    pub fn open(&self) -> Vec<Arc<FlowEntry>> {
        self.flows
            .lock()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default()
    }
}
