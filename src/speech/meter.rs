//! A live stream's usage, recorded while it runs (ScaiEcho and ScaiSpeak streams, over
//! a WebSocket or a WebRTC session).
//!
//! Every checkpoint (`[accounting] stream_checkpoint_seconds`: that many seconds of
//! audio, or of wall time with some usage when audio comes slower) the usage since the
//! last one becomes one usage record whose id is the stream's id and the checkpoint's
//! number: a crash loses at most the stretch since the last checkpoint (and what the
//! flusher had not written yet, `flush_interval_ms`), and a record written twice (a
//! replay of the spill file or of the usage stream) is counted once.
//!
//! After each checkpoint the stream must be allowed the next stretch: its audio rate
//! limit not in debt (else 429 `RATE_LIMITED`) and the next stretch's estimated cost
//! held on its budgets (else `BUDGET_EXCEEDED`); the stream then ends with that error
//! (close 4429), its usage so far recorded. So N streams of one budget overshoot it by
//! less than N stretches: each was admitted below the limit holding one stretch, and
//! used at most that stretch before it was asked again. A dependency that cannot
//! answer (SQL or Redis away) does not end a stream: it goes on unheld and is asked
//! again at the next checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounting::{Reservation, UsageRecord};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::{Dimension, Gate};

/// Characters a voice speaks in a second (about 15): what a speech stream's stretch
/// is estimated to synthesize.
const CHARACTERS_PER_SECOND: f64 = 15.0;

/// What a stream has used, in the units its records count.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    pub audio_seconds: f64,
    pub characters: u64,
}

impl Used {
    fn since(self, earlier: Used) -> Used {
        Used {
            audio_seconds: (self.audio_seconds - earlier.audio_seconds).max(0.0),
            characters: self.characters.saturating_sub(earlier.characters),
        }
    }

    fn is_empty(self) -> bool {
        self.audio_seconds <= 0.0 && self.characters == 0
    }
}

/// One stream's meter: see the module docs.
pub struct Meter {
    gate: Gate,
    principal: Arc<Principal>,
    module: &'static str,
    /// The stream's id: the records are `use_<id>_<checkpoint>`.
    stream_id: String,
    every: Duration,
    /// What the stretch ahead is estimated to cost.
    ahead_cost: f64,
    recorded: Used,
    checkpoints: u32,
    since: Instant,
    /// The next stretch's cost, held on the budgets.
    ahead: Option<Reservation>,
}

impl Meter {
    /// The meter of a stream about to start: its first stretch must be allowed (see
    /// [`Meter::next_stretch`]).
    pub async fn start(
        gate: &Gate,
        principal: Arc<Principal>,
        module: &'static str,
        stream_id: &str,
        speaks: bool,
    ) -> Result<Meter, ApiError> {
        let accounting = &gate.accounting;
        let every = accounting.stream_checkpoint;
        let prices = accounting.prices;
        let per_second = prices.audio_second
            + match speaks {
                true => CHARACTERS_PER_SECOND * prices.character,
                false => 0.0,
            };
        let mut meter = Meter {
            gate: gate.clone(),
            principal,
            module,
            stream_id: stream_id.to_owned(),
            every,
            ahead_cost: per_second * every.as_secs_f64(),
            recorded: Used::default(),
            checkpoints: 0,
            since: Instant::now(),
            ahead: None,
        };
        meter.next_stretch().await?;
        Ok(meter)
    }

    /// The stream's usage so far: a checkpoint when one is due. `Err`: the next
    /// stretch is not allowed (`RATE_LIMITED` or `BUDGET_EXCEEDED`); the stream ends
    /// with it.
    pub async fn update(&mut self, used: Used) -> Result<(), ApiError> {
        let stretch = used.since(self.recorded);
        let due = stretch.audio_seconds >= self.every.as_secs_f64()
            || (!stretch.is_empty() && self.since.elapsed() >= self.every);
        if !due {
            return Ok(());
        }
        self.record(used).await;
        self.next_stretch().await
    }

    /// The stream ended: what it used since the last checkpoint is recorded.
    pub async fn finish(mut self, used: Used) {
        self.record(used).await;
    }

    /// Records the usage since the last checkpoint and charges its audio seconds to
    /// the rate limits.
    async fn record(&mut self, used: Used) {
        let stretch = used.since(self.recorded);
        self.since = Instant::now();
        if stretch.is_empty() {
            return;
        }
        let accounting = &self.gate.accounting;
        let mut record = UsageRecord::of(&self.principal, self.module);
        record.id = format!("use_{}_{:06}", self.stream_id, self.checkpoints);
        record.continues = self.checkpoints > 0;
        record.audio_seconds = stretch.audio_seconds;
        record.characters = stretch.characters;
        record.cost = stretch.audio_seconds * accounting.prices.audio_second
            + stretch.characters as f64 * accounting.prices.character;
        // The stretch actually cost more than was held: hold that much next time.
        self.ahead_cost = self.ahead_cost.max(record.cost);
        match self.ahead.take() {
            Some(held) => held.settle(record),
            None => accounting.record(record),
        }
        self.recorded = used;
        self.checkpoints += 1;
        metrics::counter!("scaigrid_stream_checkpoints_total", "module" => self.module)
            .increment(1);
        self.gate
            .charge_audio(&self.principal, stretch.audio_seconds)
            .await;
    }

    /// The stream may go on for another stretch: its audio rate limit is not in debt
    /// and the stretch's cost is held on its budgets.
    async fn next_stretch(&mut self) -> Result<(), ApiError> {
        let allowed = async {
            let limits = &self.gate.limits;
            limits
                .check(&self.principal, Dimension::AudioSeconds)
                .await?;
            let accounting = &self.gate.accounting;
            accounting.reserve(&self.principal, self.ahead_cost).await
        };
        match allowed.await {
            Ok(held) => {
                self.ahead = Some(held);
                Ok(())
            }
            Err(refusal)
                if [ErrorCode::RATE_LIMITED, ErrorCode::BUDGET_EXCEEDED]
                    .contains(&refusal.code) =>
            {
                metrics::counter!("scaigrid_stream_limit_ends_total",
                    "module" => self.module, "code" => refusal.code.as_str())
                .increment(1);
                Err(refusal)
            }
            Err(error) => {
                tracing::warn!(stream = %self.stream_id, error = %error.message,
                    "the stream's next stretch could not be checked; it goes on unheld");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_count_from_the_last_checkpoint_and_never_go_negative() {
        let recorded = Used {
            audio_seconds: 5.0,
            characters: 40,
        };
        let now = Used {
            audio_seconds: 7.5,
            characters: 52,
        };
        assert_eq!(
            now.since(recorded),
            Used {
                audio_seconds: 2.5,
                characters: 12
            }
        );
        assert!(recorded.since(now).is_empty());
        assert!(Used::default().is_empty());
    }
}
