//! The dispatcher's core: inference on dedicated threads behind a bounded queue, with
//! concurrent requests (and streams) batched into one model run.
//!
//! A worker blocks for the first job, then takes whatever else is already waiting (up to
//! `max_batch`) without waiting for more: under load batches fill up, at low load a
//! single request runs at once, so batching never adds latency. A full queue refuses new
//! work with `EngineError::Busy` (back-pressure) instead of growing without bound.
//! Urgent requests (a stream's first audio) wait in a lane the workers empty first.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use crate::error::{EngineError, EngineResult};

struct Job<Request, Response> {
    request: Request,
    reply: oneshot::Sender<EngineResult<Response>>,
}

/// Runs one batch: one result per request, in order.
pub type BatchFn<Request, Response> =
    dyn Fn(Vec<Request>) -> Vec<EngineResult<Response>> + Send + Sync;

/// The waiting jobs: an urgent lane the workers empty first, then the normal lane. The
/// capacity bounds both together.
struct Lanes<Job> {
    urgent: VecDeque<Job>,
    normal: VecDeque<Job>,
    capacity: usize,
    closed: bool,
}

impl<Job> Lanes<Job> {
    fn len(&self) -> usize {
        self.urgent.len() + self.normal.len()
    }

    fn pop(&mut self) -> Option<Job> {
        self.urgent.pop_front().or_else(|| self.normal.pop_front())
    }
}

impl<Request, Response> Lanes<Job<Request, Response>> {
    /// The next job whose caller still waits: one whose caller went away (a client
    /// that disconnected, a cancelled call) is dropped unrun.
    fn pop_wanted(&mut self) -> Option<Job<Request, Response>> {
        loop {
            let job = self.pop()?;
            if !job.reply.is_closed() {
                return Some(job);
            }
        }
    }
}

struct Queue<Job> {
    lanes: Mutex<Lanes<Job>>,
    ready: Condvar,
}

pub struct Batcher<Request, Response> {
    queue: Arc<Queue<Job<Request, Response>>>,
}

impl<Request: Send + 'static, Response: Send + 'static> Batcher<Request, Response> {
    /// Starts `threads` workers named `name` sharing one queue of `capacity` jobs.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the batch function is handed over; each worker thread keeps a clone"
    )]
    pub fn spawn(
        name: &str,
        threads: usize,
        capacity: usize,
        max_batch: usize,
        run: Arc<BatchFn<Request, Response>>,
    ) -> EngineResult<Batcher<Request, Response>> {
        let queue = Arc::new(Queue {
            lanes: Mutex::new(Lanes {
                urgent: VecDeque::new(),
                normal: VecDeque::new(),
                capacity: capacity.max(1),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            let run = run.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || worker(&queue, max_batch.max(1), &*run))
                .map_err(|e| EngineError::Runtime(format!("starting {name} thread: {e}")))?;
        }
        Ok(Batcher { queue })
    }

    /// Queues a request; `Busy` at once when the queue is full.
    pub fn try_submit(
        &self,
        request: Request,
    ) -> EngineResult<oneshot::Receiver<EngineResult<Response>>> {
        self.enqueue(request, false)
    }

    /// Queues a request ahead of every normal one (a stream's first audio, say);
    /// `Busy` at once when the queue is full.
    pub fn try_submit_urgent(
        &self,
        request: Request,
    ) -> EngineResult<oneshot::Receiver<EngineResult<Response>>> {
        self.enqueue(request, true)
    }

    fn enqueue(
        &self,
        request: Request,
        urgent: bool,
    ) -> EngineResult<oneshot::Receiver<EngineResult<Response>>> {
        let (reply, receiver) = oneshot::channel();
        let mut lanes = self
            .queue
            .lanes
            .lock()
            .map_err(|_| EngineError::Runtime("inference queue poisoned".into()))?;
        if lanes.len() >= lanes.capacity {
            return Err(EngineError::Busy);
        }
        let job = Job { request, reply };
        match urgent {
            true => lanes.urgent.push_back(job),
            false => lanes.normal.push_back(job),
        }
        drop(lanes);
        self.queue.ready.notify_one();
        Ok(receiver)
    }

    /// Requests waiting for a worker (not counting the batch being run).
    pub fn depth(&self) -> usize {
        self.queue.lanes.lock().map_or(0, |lanes| lanes.len())
    }

    /// Queues a request and waits for its result without blocking the async runtime.
    pub async fn submit(&self, request: Request) -> EngineResult<Response> {
        wait(self.try_submit(request)?).await
    }

    /// As `submit`, ahead of the normal requests.
    pub async fn submit_urgent(&self, request: Request) -> EngineResult<Response> {
        wait(self.try_submit_urgent(request)?).await
    }
}

async fn wait<Response>(
    receiver: oneshot::Receiver<EngineResult<Response>>,
) -> EngineResult<Response> {
    receiver
        .await
        .map_err(|_| EngineError::Inference("inference worker dropped the request".into()))?
}

/// Dropping the batcher stops its workers once the queue is empty.
impl<Request, Response> Drop for Batcher<Request, Response> {
    fn drop(&mut self) {
        if let Ok(mut lanes) = self.queue.lanes.lock() {
            lanes.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

fn worker<Request, Response>(
    queue: &Queue<Job<Request, Response>>,
    max_batch: usize,
    run: &BatchFn<Request, Response>,
) {
    loop {
        let jobs = {
            let Ok(mut lanes) = queue.lanes.lock() else {
                return;
            };
            let first = loop {
                if let Some(job) = lanes.pop_wanted() {
                    break job;
                }
                if lanes.closed {
                    return;
                }
                lanes = match queue.ready.wait(lanes) {
                    Ok(lanes) => lanes,
                    Err(_) => return,
                };
            };
            let mut jobs = vec![first];
            while jobs.len() < max_batch {
                match lanes.pop_wanted() {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            jobs
        };
        let (requests, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let count = requests.len();
        // A panic inside the model code fails this batch only; the worker carries on.
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(requests)))
            .unwrap_or_else(|_| {
                (0..count)
                    .map(|_| Err(EngineError::Inference("inference panicked".into())))
                    .collect()
            });
        let mut results = results.into_iter();
        for reply in replies {
            let result = results.next().unwrap_or_else(|| {
                Err(EngineError::Inference(
                    "batch returned too few results".into(),
                ))
            });
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doubler(capacity: usize, gate: Option<Arc<Mutex<()>>>) -> Batcher<u32, (u32, usize)> {
        let run: Arc<BatchFn<u32, (u32, usize)>> = Arc::new(move |batch: Vec<u32>| {
            if let Some(gate) = &gate {
                drop(gate.lock());
            }
            let size = batch.len();
            batch
                .into_iter()
                .map(|x| {
                    if x == 13 {
                        panic!("unlucky")
                    } else {
                        Ok((x * 2, size))
                    }
                })
                .collect()
        });
        Batcher::spawn("test", 1, capacity, 8, run).unwrap()
    }

    #[tokio::test]
    async fn results_come_back_to_their_callers_in_batches() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let batcher = doubler(64, Some(gate.clone()));
        // The first job occupies the worker (blocked on the gate); the rest queue up.
        let receivers: Vec<_> = (0..10).map(|x| batcher.try_submit(x).unwrap()).collect();
        drop(held);
        let mut sizes = Vec::new();
        for (x, receiver) in receivers.into_iter().enumerate() {
            let (doubled, size) = receiver.await.unwrap().unwrap();
            assert_eq!(doubled, 2 * x as u32);
            sizes.push(size);
        }
        assert!(
            sizes.iter().any(|s| *s > 1),
            "nothing was batched: {sizes:?}"
        );
        assert!(sizes.iter().all(|s| *s <= 8), "batch over max: {sizes:?}");
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_and_a_panic_fails_only_its_batch() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let batcher = doubler(2, Some(gate.clone()));
        let first = batcher.try_submit(1).unwrap();
        // The worker may or may not have taken the first job yet; fill until refused.
        let mut queued = vec![first];
        let refused = loop {
            match batcher.try_submit(2) {
                Ok(receiver) => queued.push(receiver),
                Err(error) => break error,
            }
            assert!(queued.len() <= 4, "queue did not fill");
        };
        assert!(matches!(refused, EngineError::Busy));
        drop(held);
        for receiver in queued {
            assert!(receiver.await.unwrap().is_ok());
        }
        assert!(
            batcher.submit(13).await.is_err(),
            "the panicking batch fails"
        );
        assert_eq!(batcher.submit(4).await.unwrap().0, 8, "the worker survived");
    }

    /// What [`recorder`] gives: the batcher, the order it ran jobs in, and the job it
    /// is holding at the gate.
    type Recorder = (
        Batcher<u32, u32>,
        Arc<Mutex<Vec<u32>>>,
        oneshot::Receiver<EngineResult<u32>>,
    );

    /// A batcher of one-job batches that records the order it ran them in, each held
    /// at `gate` first; and one job it is already holding there.
    fn recorder(gate: &Arc<Mutex<()>>) -> Recorder {
        let order = Arc::new(Mutex::new(Vec::new()));
        let (seen, worker_gate) = (order.clone(), gate.clone());
        let run: Arc<BatchFn<u32, u32>> = Arc::new(move |batch: Vec<u32>| {
            drop(worker_gate.lock());
            seen.lock().unwrap().extend(batch.iter().copied());
            batch.into_iter().map(Ok).collect()
        });
        let batcher = Batcher::spawn("test", 1, 8, 1, run).unwrap();
        let first = batcher.try_submit(0).unwrap();
        while batcher.depth() > 0 {
            std::thread::yield_now();
        }
        (batcher, order, first)
    }

    #[tokio::test]
    async fn urgent_requests_overtake_the_waiting_ones() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (batcher, order, first) = recorder(&gate);
        let normal: Vec<_> = (1..4).map(|x| batcher.try_submit(x).unwrap()).collect();
        let urgent = batcher.try_submit_urgent(9).unwrap();
        drop(held);
        assert_eq!(urgent.await.unwrap().unwrap(), 9);
        for receiver in normal {
            receiver.await.unwrap().unwrap();
        }
        first.await.unwrap().unwrap();
        assert_eq!(*order.lock().unwrap(), vec![0, 9, 1, 2, 3]);
    }

    #[tokio::test]
    async fn a_request_whose_caller_went_away_is_not_run() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (batcher, ran, first) = recorder(&gate);
        let gone = batcher.try_submit(1).unwrap();
        let kept = batcher.try_submit(2).unwrap();
        assert_eq!(batcher.depth(), 2);
        drop(gone);
        drop(held);
        assert_eq!(kept.await.unwrap().unwrap(), 2);
        first.await.unwrap().unwrap();
        assert_eq!(*ran.lock().unwrap(), vec![0, 2]);
    }
}
