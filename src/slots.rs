//! Open streams per tenant: the 429/4429 limit of ScaiEcho's and ScaiSpeak's streaming
//! routes (WebSocket and WebRTC alike). A slot is taken before a stream's `open` is
//! read, so a tenant at its limit is refused at once, and given back when the slot is
//! dropped, however the stream ends. In a scaled deployment the cap is the tenant's
//! across every edge: each slot also holds a lease in Redis (`cluster::streams`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cluster::Cluster;
use crate::cluster::streams::Lease;
use crate::error::{ApiError, ErrorCode};

/// The open streams of one kind, per tenant.
pub struct StreamSlots {
    /// The gauge of the streams open (`scaigrid_<module>_streams_open`).
    gauge: &'static str,
    open: Mutex<HashMap<String, usize>>,
    /// Redis of the scaled deployment, and the kind's name there (`None`: embedded).
    shared: Option<(Arc<Cluster>, &'static str)>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<StreamSlots>,
    tenant: String,
    /// The deployment-wide lease (scaled); given back with the slot.
    _lease: Option<Lease>,
}

impl StreamSlots {
    /// Slots of streams of `kind` (`scaiecho`, `scaispeak`); `cluster`: shared with
    /// every edge of a scaled deployment.
    pub fn new(
        gauge: &'static str,
        kind: &'static str,
        cluster: Option<Arc<Cluster>>,
    ) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            gauge,
            open: Mutex::new(HashMap::new()),
            shared: cluster.map(|cluster| (cluster, kind)),
        })
    }

    /// One of `tenant`'s `limit` slots, or 429/4429 `RATE_LIMITED` when all are taken
    /// (here, or across the deployment).
    pub async fn take(self: &Arc<Self>, tenant: &str, limit: usize) -> Result<Slot, ApiError> {
        let full = || {
            ApiError::new(
                ErrorCode::RATE_LIMITED,
                format!("the tenant already has {limit} open streams"),
            )
            .with_field("limit", limit)
        };
        let mut slot = self.take_here(tenant, limit).ok_or_else(full)?;
        if let Some((cluster, kind)) = &self.shared {
            let lease = crate::cluster::streams::take(cluster, (kind, tenant), limit).await?;
            slot._lease = Some(lease.ok_or_else(full)?);
        }
        Ok(slot)
    }

    /// A slot of this process's count (`None`: at the limit here already).
    fn take_here(self: &Arc<Self>, tenant: &str, limit: usize) -> Option<Slot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(tenant.to_owned()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        metrics::gauge!(self.gauge).increment(1.0);
        Some(Slot {
            slots: self.clone(),
            tenant: tenant.to_owned(),
            _lease: None,
        })
    }

    /// Streams `tenant` has open.
    pub fn open(&self, tenant: &str) -> usize {
        self.open
            .lock()
            .map(|open| open.get(tenant).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.slots.open.lock()
            && let Some(count) = open.get_mut(&self.tenant)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
        metrics::gauge!(self.slots.gauge).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_are_per_tenant_and_come_back_when_dropped() {
        let slots = StreamSlots::new("test_streams_open", "test", None);
        let a = slots.take("t1", 2).await.unwrap();
        let _b = slots.take("t1", 2).await.unwrap();
        let refused = slots.take("t1", 2).await.err().unwrap();
        assert_eq!(refused.code, ErrorCode::RATE_LIMITED);
        let _other = slots.take("t2", 2).await.unwrap();
        drop(a);
        assert_eq!(slots.open("t1"), 1);
        let _c = slots.take("t1", 2).await.unwrap();
        assert_eq!(slots.open("t1"), 2);
    }
}
