//! `GET /v1/infra/workers`: the processes that run jobs (the transcription dashboard's
//! workers), each as its last heartbeat told it, and the totals of those alive.

use std::sync::Arc;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Auth;
use crate::db::workers::WorkerRow;
use crate::error::ApiResult;
use crate::extract::Json;

#[derive(Serialize, ToSchema)]
pub struct WorkerView {
    #[serde(flatten)]
    row: WorkerRow,
    /// `alive` while its heartbeat is recent; `lost` when the process went quiet (it
    /// died or cannot reach the database; its jobs come back when their leases lapse).
    status: &'static str,
    /// `capacity - busy` while alive, else 0.
    idle: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WorkerList {
    object: &'static str,
    data: Vec<WorkerView>,
    /// Jobs the alive processes run at once, run now, and could take now.
    capacity: i64,
    busy: i64,
    idle: i64,
}

/// The job worker processes with their capacity, busy and idle workers (any
/// authenticated caller, like the nodes list: no tenant's data is in it).
#[utoipa::path(get, path = "/v1/infra/workers", tag = "operations",
    responses((status = 200, body = WorkerList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Auth,
) -> ApiResult<Json<WorkerList>> {
    let rows = {
        let mut conn = state.db.pool.acquire().await?;
        crate::db::workers::list(&mut conn).await?
    };
    Ok(Json(view(rows, crate::db::now_ms())))
}

/// Marks each row alive or lost at `now_ms` and sums the alive ones.
fn view(rows: Vec<WorkerRow>, now_ms: i64) -> WorkerList {
    let lost_after = crate::worker::HEARTBEAT_LOST.as_millis() as i64;
    let data: Vec<WorkerView> = rows
        .into_iter()
        .map(|row| {
            let alive = now_ms - row.seen_at.0 <= lost_after;
            WorkerView {
                idle: if alive {
                    (row.capacity - row.busy).max(0)
                } else {
                    0
                },
                status: if alive { "alive" } else { "lost" },
                row,
            }
        })
        .collect();
    let alive = data.iter().filter(|w| w.status == "alive");
    let (capacity, busy) = alive.fold((0, 0), |(c, b), w| (c + w.row.capacity, b + w.row.busy));
    WorkerList {
        object: "list",
        capacity,
        busy,
        idle: data.iter().map(|w| w.idle).sum(),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Timestamp;

    fn row(id: &str, capacity: i64, busy: i64, seen_at: i64) -> WorkerRow {
        WorkerRow {
            id: id.into(),
            node_id: "n".into(),
            host: "h".into(),
            pid: 1,
            capacity,
            busy,
            jobs_handled: 0,
            started_at: Timestamp(0),
            seen_at: Timestamp(seen_at),
        }
    }

    #[test]
    fn a_quiet_process_is_lost_and_counts_for_nothing() {
        let now = 100_000;
        let list = view(
            vec![row("a", 4, 1, now - 1_000), row("b", 2, 2, now - 60_000)],
            now,
        );
        assert_eq!(list.data[0].status, "alive");
        assert_eq!(list.data[0].idle, 3);
        assert_eq!(list.data[1].status, "lost");
        assert_eq!(list.data[1].idle, 0);
        assert_eq!((list.capacity, list.busy, list.idle), (4, 1, 3));
    }
}
