//! Things open per source address (captured connections, handshakes in progress), for the
//! caps per source. A slot counts in a total kept in the shared state and in its source's
//! entry; dropping it gives both back, and a source's entry leaves with its last slot.
use crate::plane::Shared;
use crate::stats;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct PerSource(Mutex<HashMap<IpAddr, u32>>);

/// Which total of the shared state a slot counts in.
pub type Total = fn(&Shared) -> &AtomicU64;

pub struct SourceSlot {
    shared: Arc<Shared>,
    per_source: Arc<PerSource>,
    total: Total,
    ip: IpAddr,
}

impl PerSource {
    /// Open now from `ip` (a poisoned lock counts as full: refuse rather than guess).
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.0
            .lock()
            .map(|m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(u32::MAX)
    }

    pub fn take(self: &Arc<Self>, shared: &Arc<Shared>, total: Total, ip: IpAddr) -> SourceSlot {
        stats::inc(total(shared));
        if let Ok(mut m) = self.0.lock() {
            *m.entry(ip).or_insert(0) += 1;
        }
        SourceSlot {
            shared: shared.clone(),
            per_source: self.clone(),
            total,
            ip,
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        stats::dec((self.total)(&self.shared));
        if let Ok(mut m) = self.per_source.0.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}
