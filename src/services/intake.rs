//! Audio intake: how much uploaded audio may sit in memory at once, and how many whole
//! files decode at once. Both are bounded so a burst of large uploads waits or gets 503
//! with `Retry-After` instead of growing the process until the kernel kills it.
//!
//! Uploads reserve their size (the declared `Content-Length`, else the upload limit)
//! from a byte budget before the body is read, and keep it until the request ends.
//! Decodes take one of a fixed number of slots (by default one per core) for the
//! blocking decode; waiting for a slot is bounded by the upload budget, since every
//! waiter holds its reservation.

use std::sync::Arc;

use axum::http::{HeaderValue, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ApiError, ApiResult, ErrorCode};

/// The budget is counted in KiB (a semaphore holds at most `u32::MAX` permits per
/// acquire, and byte precision buys nothing here).
const UNIT: usize = 1024;

pub struct AudioIntake {
    upload_bytes: Arc<Semaphore>,
    upload_budget_units: usize,
    decodes: Arc<Semaphore>,
}

/// An upload's reservation; released when dropped.
pub struct UploadReservation {
    _permit: OwnedSemaphorePermit,
}

/// A decode slot; released when dropped.
pub struct DecodeSlot {
    _permit: OwnedSemaphorePermit,
}

impl AudioIntake {
    pub fn new(upload_memory_bytes: usize, concurrent_decodes: usize) -> AudioIntake {
        let units = upload_memory_bytes.div_ceil(UNIT).max(1);
        AudioIntake {
            upload_bytes: Arc::new(Semaphore::new(units)),
            upload_budget_units: units,
            decodes: Arc::new(Semaphore::new(concurrent_decodes.max(1))),
        }
    }

    /// Reserves `bytes` of the upload budget, or 503 `SERVICE_UNAVAILABLE` with
    /// `Retry-After` when the budget is taken by uploads in flight.
    pub fn reserve_upload(&self, bytes: usize) -> ApiResult<UploadReservation> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.upload_budget_units);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match self.upload_bytes.clone().try_acquire_many_owned(units) {
            Ok(permit) => Ok(UploadReservation { _permit: permit }),
            Err(_) => {
                metrics::counter!("scaigrid_uploads_shed_total").increment(1);
                Err(ApiError::new(
                    ErrorCode::SERVICE_UNAVAILABLE,
                    "too many uploads in flight: retry shortly",
                )
                .with_field("limit", (self.upload_budget_units * UNIT) as u64)
                .with_field("limit_unit", "bytes")
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
            }
        }
    }

    /// Waits for a decode slot.
    pub async fn decode_slot(&self) -> ApiResult<DecodeSlot> {
        let permit = self
            .decodes
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        Ok(DecodeSlot { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_budget_sheds_beyond_its_size_and_frees_on_drop() {
        let intake = AudioIntake::new(10 * UNIT, 1);
        let first = intake.reserve_upload(6 * UNIT).unwrap();
        let error = intake.reserve_upload(6 * UNIT).err().unwrap();
        assert_eq!(error.code, ErrorCode::SERVICE_UNAVAILABLE);
        assert!(
            error
                .headers
                .iter()
                .any(|(name, _)| name == header::RETRY_AFTER)
        );
        drop(first);
        // Larger than the whole budget: takes all of it rather than never fitting.
        let whole = intake.reserve_upload(1 << 30).unwrap();
        assert!(intake.reserve_upload(1).is_err());
        drop(whole);
        assert!(intake.reserve_upload(1).is_ok());
    }

    #[tokio::test]
    async fn decode_slots_are_bounded() {
        let intake = AudioIntake::new(UNIT, 2);
        let a = intake.decode_slot().await.unwrap();
        let _b = intake.decode_slot().await.unwrap();
        assert_eq!(
            intake.decodes.available_permits(),
            0,
            "a third decode waits"
        );
        drop(a);
        assert_eq!(intake.decodes.available_permits(), 1);
        intake.decode_slot().await.unwrap();
    }
}
