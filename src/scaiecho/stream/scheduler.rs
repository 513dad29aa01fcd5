//! Which snapshot of a stream to transcribe next, and what each result becomes. Pure
//! logic, generic over the result type, so the ordering rules are tested without a
//! model.
//!
//! One transcription per stream runs at a time, which bounds a stream's share of the
//! engine and keeps its deltas in order. Finals queue and never drop; of partials and
//! candidates only the newest waits (a newer one supersedes it). A candidate whose final
//! arrives with the same key *is* the final: if its result is in, the final is sent at
//! once; if it is running, its result is sent as the final when it lands.

use std::collections::VecDeque;

use engines::endpoint::{Kind, Snapshot};

/// A delta to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit<R> {
    pub result: R,
    pub utterance: u64,
    /// Stream samples.
    pub start: u64,
    pub end: u64,
    pub is_final: bool,
}

struct Running {
    kind: Kind,
    key: (u64, u64),
    utterance: u64,
    start: u64,
    end: u64,
}

pub struct Scheduler<R> {
    running: Option<Running>,
    finals: VecDeque<Snapshot>,
    /// The newest partial or candidate not yet started.
    pending: Option<Snapshot>,
    /// The latest candidate's result, until its final comes or the speech moves on.
    candidate: Option<((u64, u64), R)>,
    /// A final whose candidate is running (its result will be the final's).
    confirmed: Option<Snapshot>,
    /// Utterances below this have their final queued or sent: their interims are stale.
    finalized_below: u64,
}

impl<R> Default for Scheduler<R> {
    fn default() -> Self {
        Scheduler {
            running: None,
            finals: VecDeque::new(),
            pending: None,
            candidate: None,
            confirmed: None,
            finalized_below: 0,
        }
    }
}

/// What to send now and what to start next.
pub type Step<R> = (Vec<Emit<R>>, Option<Snapshot>);

impl<R: Clone> Scheduler<R> {
    /// Nothing running and nothing waiting.
    pub fn idle(&self) -> bool {
        self.running.is_none() && self.finals.is_empty() && self.pending.is_none()
    }

    /// A new snapshot from the endpointer.
    pub fn offer(&mut self, snapshot: Snapshot) -> Step<R> {
        let mut emits = Vec::new();
        match snapshot.kind {
            Kind::Final => {
                self.finalized_below = self.finalized_below.max(snapshot.utterance + 1);
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.utterance <= snapshot.utterance)
                {
                    self.pending = None;
                }
                let ready = self.candidate.take();
                match ready {
                    Some((key, result)) if key == snapshot.key() => {
                        emits.push(emit(result, &snapshot, true));
                    }
                    _ => {
                        let candidate_running = self
                            .running
                            .as_ref()
                            .is_some_and(|r| r.kind == Kind::Candidate && r.key == snapshot.key());
                        match candidate_running {
                            true => self.confirmed = Some(snapshot),
                            false => self.finals.push_back(snapshot),
                        }
                    }
                }
            }
            Kind::Partial | Kind::Candidate => {
                if snapshot.utterance >= self.finalized_below {
                    self.pending = Some(snapshot);
                }
            }
        }
        (emits, self.next())
    }

    /// The running transcription finished: `Some(result)`, or `None` when it failed or
    /// was skipped (a failed candidate that was confirmed runs again as the final).
    pub fn finished(&mut self, result: Option<R>) -> Step<R> {
        let mut emits = Vec::new();
        let Some(running) = self.running.take() else {
            return (emits, self.next());
        };
        let confirmed = self
            .confirmed
            .take_if(|c| running.kind == Kind::Candidate && c.key() == running.key);
        match (result, confirmed) {
            (Some(result), Some(last)) => emits.push(emit(result, &last, true)),
            (None, Some(last)) => self.finals.push_front(last),
            (None, None) => {}
            (Some(result), None) => {
                let is_final = running.kind == Kind::Final;
                if running.kind == Kind::Candidate {
                    self.candidate = Some((running.key, result.clone()));
                }
                if is_final || running.utterance >= self.finalized_below {
                    emits.push(Emit {
                        result,
                        utterance: running.utterance,
                        start: running.start,
                        end: running.end,
                        is_final,
                    });
                }
            }
        }
        (emits, self.next())
    }

    fn next(&mut self) -> Option<Snapshot> {
        if self.running.is_some() {
            return None;
        }
        let snapshot = self.finals.pop_front().or_else(|| self.pending.take())?;
        self.running = Some(Running {
            kind: snapshot.kind,
            key: snapshot.key(),
            utterance: snapshot.utterance,
            start: snapshot.start,
            end: snapshot.end,
        });
        Some(snapshot)
    }
}

fn emit<R>(result: R, snapshot: &Snapshot, is_final: bool) -> Emit<R> {
    Emit {
        result,
        utterance: snapshot.utterance,
        start: snapshot.start,
        end: snapshot.end,
        is_final,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn snap(kind: Kind, utterance: u64, speech_end: u64, end: u64) -> Snapshot {
        Snapshot {
            kind,
            utterance,
            audio: Arc::new(Vec::new()),
            start: 0,
            end,
            speech_end,
        }
    }

    #[test]
    fn a_finished_candidate_becomes_the_final_at_once() {
        let mut s = Scheduler::<&str>::default();
        let (_, start) = s.offer(snap(Kind::Candidate, 0, 100, 130));
        assert_eq!(start.unwrap().kind, Kind::Candidate);
        let (emits, next) = s.finished(Some("hello"));
        assert_eq!(emits.len(), 1);
        assert!(!emits[0].is_final);
        assert!(next.is_none());
        // The final (same speech, more trailing silence) reuses the text, no new run.
        let (emits, next) = s.offer(snap(Kind::Final, 0, 100, 200));
        assert!(next.is_none());
        assert_eq!(emits.len(), 1);
        assert!(emits[0].is_final);
        assert_eq!((emits[0].result, emits[0].end), ("hello", 200));
        assert!(s.idle());
    }

    #[test]
    fn a_running_candidate_confirmed_by_its_final_lands_as_the_final() {
        let mut s = Scheduler::<&str>::default();
        s.offer(snap(Kind::Candidate, 0, 100, 130));
        let (emits, next) = s.offer(snap(Kind::Final, 0, 100, 200));
        assert!(emits.is_empty() && next.is_none());
        let (emits, _) = s.finished(Some("hello"));
        assert_eq!(emits.len(), 1);
        assert!(emits[0].is_final);
        assert_eq!(emits[0].end, 200);
        assert!(s.idle());
    }

    #[test]
    fn a_failed_confirmed_candidate_reruns_as_the_final() {
        let mut s = Scheduler::<&str>::default();
        s.offer(snap(Kind::Candidate, 0, 100, 130));
        s.offer(snap(Kind::Final, 0, 100, 200));
        let (emits, next) = s.finished(None);
        assert!(emits.is_empty());
        let rerun = next.expect("the final runs");
        assert_eq!((rerun.kind, rerun.end), (Kind::Final, 200));
        let (emits, _) = s.finished(Some("hello"));
        assert!(emits[0].is_final);
    }

    #[test]
    fn finals_queue_in_order_and_stale_partials_are_dropped() {
        let mut s = Scheduler::<u32>::default();
        let (_, first) = s.offer(snap(Kind::Partial, 0, 50, 60));
        assert_eq!(first.unwrap().kind, Kind::Partial);
        // While the partial runs: a newer partial waits, then utterance 0 ends (its
        // speech moved on: a new final run), utterance 1 speaks and ends too.
        assert!(s.offer(snap(Kind::Partial, 0, 80, 90)).1.is_none());
        assert!(s.offer(snap(Kind::Final, 0, 100, 120)).1.is_none());
        assert!(s.offer(snap(Kind::Partial, 1, 200, 210)).1.is_none());
        assert!(s.offer(snap(Kind::Final, 1, 300, 320)).1.is_none());
        // The running partial of utterance 0 lands after its final was queued: stale.
        let (emits, next) = s.finished(Some(1));
        assert!(emits.is_empty());
        let next = next.unwrap();
        assert_eq!((next.kind, next.utterance), (Kind::Final, 0));
        let (emits, next) = s.finished(Some(2));
        assert_eq!(emits[0].utterance, 0);
        assert!(emits[0].is_final);
        let next = next.unwrap();
        assert_eq!((next.kind, next.utterance), (Kind::Final, 1));
        let (emits, next) = s.finished(Some(3));
        assert_eq!((emits[0].utterance, emits[0].is_final), (1, true));
        assert!(next.is_none());
        assert!(s.idle());
    }

    #[test]
    fn only_the_newest_waiting_partial_runs() {
        let mut s = Scheduler::<u32>::default();
        s.offer(snap(Kind::Partial, 0, 10, 10));
        s.offer(snap(Kind::Partial, 0, 20, 20));
        s.offer(snap(Kind::Partial, 0, 30, 30));
        let (emits, next) = s.finished(Some(1));
        assert_eq!(emits.len(), 1);
        assert_eq!(next.unwrap().end, 30);
        let (_, next) = s.finished(Some(2));
        assert!(next.is_none());
    }
}
