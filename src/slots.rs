//! Open streams per tenant: the 429/4429 limit of ScaiEcho's and ScaiSpeak's streaming
//! routes (WebSocket and WebRTC alike). A slot is taken before a stream's `open` is
//! read, so a tenant at its limit is refused at once, and given back when the slot is
//! dropped, however the stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{ApiError, ErrorCode};

/// The open streams of one kind, per tenant.
pub struct StreamSlots {
    /// The gauge of the streams open (`scaigrid_<module>_streams_open`).
    gauge: &'static str,
    open: Mutex<HashMap<String, usize>>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<StreamSlots>,
    tenant: String,
}

impl StreamSlots {
    pub fn new(gauge: &'static str) -> Arc<StreamSlots> {
        Arc::new(StreamSlots {
            gauge,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// One of `tenant`'s `limit` slots, or 429/4429 `RATE_LIMITED` when all are taken.
    pub fn take(self: &Arc<Self>, tenant: &str, limit: usize) -> Result<Slot, ApiError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| ApiError::internal("stream registry poisoned"))?;
        let count = open.entry(tenant.to_owned()).or_default();
        if *count >= limit {
            return Err(ApiError::new(
                ErrorCode::RATE_LIMITED,
                format!("the tenant already has {limit} open streams"),
            )
            .with_field("limit", limit));
        }
        *count += 1;
        metrics::gauge!(self.gauge).increment(1.0);
        Ok(Slot {
            slots: self.clone(),
            tenant: tenant.to_owned(),
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

    #[test]
    fn slots_are_per_tenant_and_come_back_when_dropped() {
        let slots = StreamSlots::new("test_streams_open");
        let a = slots.take("t1", 2).unwrap();
        let _b = slots.take("t1", 2).unwrap();
        let refused = slots.take("t1", 2).err().unwrap();
        assert_eq!(refused.code, ErrorCode::RATE_LIMITED);
        let _other = slots.take("t2", 2).unwrap();
        drop(a);
        assert_eq!(slots.open("t1"), 1);
        let _c = slots.take("t1", 2).unwrap();
        assert_eq!(slots.open("t1"), 2);
    }
}
