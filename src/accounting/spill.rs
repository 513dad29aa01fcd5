//! Usage records that cannot reach SQL (or, scaled, the usage stream) while memory is
//! full: the buffer keeps at most `[accounting] max_buffered_records`, and after a
//! failed flush the oldest beyond that are appended to `accounting-spill.jsonl` in the
//! data folder (one JSON record a line). After a flush succeeds, the file is replayed
//! a buffer's worth at a time through the normal flush and removed. Record ids make a
//! replay idempotent in SQL. Memory stays within the buffer plus what one flush
//! interval records; nothing is dropped unless the disk refuses the file too (logged
//! loudly, the records kept in memory).
//!
//! `scaigrid_accounting_spilled_records` is how many records wait in the file,
//! `scaigrid_accounting_buffered_records` how many in memory.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use super::{Accounting, UsageRecord};

pub const SPILLED: &str = "scaigrid_accounting_spilled_records";
pub const BUFFERED: &str = "scaigrid_accounting_buffered_records";
/// The spill file's name in the data folder.
pub const FILE: &str = "accounting-spill.jsonl";

/// The spill file and what is known of it.
pub(super) struct Spill {
    path: PathBuf,
    /// Records the buffer keeps before spilling.
    pub(super) cap: usize,
    /// Records in the file.
    count: AtomicUsize,
    /// The oldest record's time in the file (`i64::MAX`: none), for the flush lag.
    oldest: AtomicI64,
}

impl Spill {
    /// The spill file of `data_dir`; one left by an earlier run is counted (and
    /// replayed at the first flush that succeeds).
    pub(super) fn new(data_dir: &Path, cap: usize) -> Spill {
        let path = data_dir.join(FILE);
        // A replay cut short by a crash: its records join the file again.
        let replaying = path.with_extension("replaying");
        if let Ok(left) = std::fs::read(&replaying) {
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut file| file.write_all(&left));
            match appended {
                Ok(()) => {
                    let _ = std::fs::remove_file(&replaying);
                }
                Err(error) => tracing::error!(%error, "the spill file's replay could not resume"),
            }
        }
        let (count, oldest) = match std::fs::File::open(&path) {
            Ok(file) => std::io::BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter_map(|line| serde_json::from_str::<UsageRecord>(&line).ok())
                .fold((0, i64::MAX), |(n, oldest), r| {
                    (n + 1, oldest.min(r.created_at))
                }),
            Err(_) => (0, i64::MAX),
        };
        metrics::gauge!(SPILLED).set(count as f64);
        Spill {
            path,
            cap: cap.max(1),
            count: AtomicUsize::new(count),
            oldest: AtomicI64::new(oldest),
        }
    }

    pub(super) fn oldest(&self) -> Option<i64> {
        Some(self.oldest.load(Ordering::Relaxed)).filter(|at| *at != i64::MAX)
    }

    /// Appends records to the file.
    async fn append(&self, records: &[UsageRecord]) -> std::io::Result<()> {
        let mut text = String::new();
        for record in records {
            text.push_str(&serde_json::to_string(record).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(folder) = path.parent() {
                std::fs::create_dir_all(folder)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(text.as_bytes())?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        let oldest = records
            .iter()
            .map(|r| r.created_at)
            .min()
            .unwrap_or(i64::MAX);
        self.oldest.fetch_min(oldest, Ordering::Relaxed);
        let count = self.count.fetch_add(records.len(), Ordering::Relaxed) + records.len();
        metrics::gauge!(SPILLED).set(count as f64);
        Ok(())
    }

    /// Takes every record out of the file (which is removed), `cap` at a time to
    /// `each`; when `each` fails, the records not yet given to it go back to the file.
    /// The file is read on blocking threads, a batch at a time.
    async fn drain<F, Fut>(&self, mut each: F) -> anyhow::Result<usize>
    where
        F: FnMut(Vec<UsageRecord>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let (path, cap) = (self.path.clone(), self.cap);
        let replaying = path.with_extension("replaying");
        // The file is renamed first: records spilled meanwhile start a new one.
        let opened = {
            let replaying = replaying.clone();
            blocking(move || {
                if !path.exists() {
                    return Ok(None);
                }
                std::fs::rename(&path, &replaying)?;
                Ok(Some(
                    std::io::BufReader::new(std::fs::File::open(&replaying)?).lines(),
                ))
            })
            .await?
        };
        let Some(mut lines) = opened else {
            return Ok(0);
        };
        self.count.store(0, Ordering::Relaxed);
        self.oldest.store(i64::MAX, Ordering::Relaxed);
        let mut replayed = 0;
        loop {
            let (rest, batch) = blocking(move || {
                let batch = read_batch(&mut lines, cap)?;
                Ok((lines, batch))
            })
            .await?;
            lines = rest;
            if batch.is_empty() {
                break;
            }
            let count = batch.len();
            if let Err(error) = each(batch).await {
                // The rest of the file waits for the next try (copied line by line:
                // a long outage's file is never read into memory whole).
                let path = self.path.clone();
                let replaying = replaying.clone();
                let (kept, oldest) = blocking(move || {
                    let kept = keep(&path, lines)?;
                    std::fs::remove_file(&replaying)?;
                    Ok(kept)
                })
                .await?;
                self.oldest.fetch_min(oldest, Ordering::Relaxed);
                let count = self.count.fetch_add(kept, Ordering::Relaxed) + kept;
                metrics::gauge!(SPILLED).set(count as f64);
                return Err(error);
            }
            replayed += count;
        }
        blocking(move || std::fs::remove_file(&replaying)).await?;
        let left = self.count.load(Ordering::Relaxed);
        metrics::gauge!(SPILLED).set(left as f64);
        Ok(replayed)
    }
}

type Lines = std::io::Lines<std::io::BufReader<std::fs::File>>;

/// Runs file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)?
}

/// Up to `cap` records from `lines`; a torn line (a crash mid-append) is skipped.
fn read_batch(lines: &mut Lines, cap: usize) -> std::io::Result<Vec<UsageRecord>> {
    let mut batch = Vec::with_capacity(cap);
    for line in lines.by_ref() {
        if let Ok(record) = serde_json::from_str::<UsageRecord>(&line?) {
            batch.push(record);
        }
        if batch.len() >= cap {
            break;
        }
    }
    Ok(batch)
}

/// Appends the records of `lines` to the file at `path`, one at a time: how many, and
/// the oldest one's time.
fn keep(path: &Path, lines: Lines) -> std::io::Result<(usize, i64)> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut out = std::io::BufWriter::new(file);
    let (mut kept, mut oldest) = (0, i64::MAX);
    for line in lines.map_while(Result::ok) {
        let Ok(record) = serde_json::from_str::<UsageRecord>(&line) else {
            continue;
        };
        writeln!(out, "{line}")?;
        oldest = oldest.min(record.created_at);
        kept += 1;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    Ok((kept, oldest))
}

impl Accounting {
    /// After a failed flush: the oldest buffered records beyond the cap go to the
    /// spill file.
    pub(super) async fn spill_excess(&self) {
        let excess: Vec<UsageRecord> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let over = pending.len().saturating_sub(self.spill.cap);
            pending.drain(..over).collect()
        };
        if excess.is_empty() {
            return;
        }
        match self.spill.append(&excess).await {
            Ok(()) => {
                tracing::warn!(records = excess.len(), file = %self.spill.path.display(),
                    "usage records spilled to disk until SQL is back");
            }
            Err(error) => {
                tracing::error!(%error, records = excess.len(),
                    "usage records could not be spilled to disk; kept in memory");
                self.restore(excess);
            }
        }
    }

    /// After a flush succeeded: the spill file's records are flushed a buffer's worth
    /// at a time, and the file removed.
    pub(super) async fn replay_spilled(&self) -> anyhow::Result<usize> {
        let replayed = self
            .spill
            .drain(|batch| async move {
                self.restore(batch);
                self.book.flush(self).await.map(drop)
            })
            .await?;
        if replayed > 0 {
            tracing::info!(records = replayed, "spilled usage records written");
        }
        Ok(replayed)
    }

    pub(super) fn buffered(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> UsageRecord {
        let mut record = UsageRecord::for_subject("ten_1", "api_key", "key_1", "scaiecho");
        record.id = format!("use_{n}");
        record.audio_seconds = 1.0;
        record.created_at = 1_000 + n as i64;
        record
    }

    #[tokio::test]
    async fn spilled_records_are_counted_replayed_in_batches_and_kept_when_a_batch_fails() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), 2);
        let records: Vec<UsageRecord> = (0..5).map(record).collect();
        spill.append(&records[..3]).await.unwrap();
        spill.append(&records[3..]).await.unwrap();
        assert_eq!(spill.oldest(), Some(1_000));
        // A torn last line is skipped.
        let path = dir.path().join(FILE);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"id\":\"use_to")
            .unwrap();
        // A later process counts what an earlier one left.
        let spill = Spill::new(dir.path(), 2);
        assert_eq!(spill.count.load(Ordering::Relaxed), 5);

        // The second batch fails: it is not given back here (the buffer keeps it), the
        // records after it go back to the file.
        let mut seen = Vec::new();
        let failed = spill
            .drain(|batch| {
                let fail = !seen.is_empty();
                seen.push(batch.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
                async move {
                    match fail {
                        true => anyhow::bail!("sql away"),
                        false => Ok(()),
                    }
                }
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(seen, [vec!["use_0", "use_1"], vec!["use_2", "use_3"]]);
        assert_eq!(spill.count.load(Ordering::Relaxed), 1);
        let mut rest = Vec::new();
        let replayed = spill
            .drain(|batch| {
                rest.extend(batch);
                async { Ok(()) }
            })
            .await
            .unwrap();
        assert_eq!((replayed, rest), (1, vec![record(4)]));
        assert!(!path.exists() && spill.oldest().is_none());
        assert_eq!(spill.drain(|_| async { Ok(()) }).await.unwrap(), 0);
    }
}
