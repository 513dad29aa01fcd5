//! Cursor pagination of lists ordered by `(created_at, id)`: `limit` rows after the row
//! whose id is `after`. A cursor is a row id, so pages hold when rows are added or
//! removed between calls (offsets would skip or repeat rows).

use sqlx::any::AnyArguments;
use sqlx::query::Query;

/// Rows a page holds when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most rows one page may hold.
pub const MAX_LIMIT: u32 = 1000;

/// Which way a list runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (users, keys, roles).
    Oldest,
    /// Newest first (jobs, deliveries).
    Newest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

impl Page {
    /// A page from the query's `limit` and `after`; `None` for a limit out of range.
    pub fn new(limit: Option<u32>, after: Option<String>) -> Option<Page> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return None;
        }
        let after = after.filter(|after| !after.is_empty());
        Some(Page { limit, after })
    }

    /// [`Page::new`] for a request's query: 400 `INVALID_REQUEST` for a limit out of range.
    pub fn parse(limit: Option<u32>, after: Option<String>) -> crate::error::ApiResult<Page> {
        Page::new(limit, after).ok_or_else(|| {
            crate::error::ApiError::invalid(format!("`limit` must be 1 to {MAX_LIMIT}"))
                .with_field("field", "limit")
        })
    }

    /// The page of a list already in memory (in its order): the rows after the one whose
    /// id is `after` (none when that row is not there), and the next page's cursor.
    pub fn slice<T>(&self, rows: Vec<T>, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
        let start = match &self.after {
            None => 0,
            Some(after) => rows
                .iter()
                .position(|row| id(row) == after)
                .map_or(rows.len(), |at| at + 1),
        };
        let rows: Vec<T> = rows
            .into_iter()
            .skip(start)
            .take(self.limit as usize + 1)
            .collect();
        self.split(rows, id)
    }

    /// The tail of a `SELECT ... FROM {table} WHERE ...` whose binds so far end at
    /// `$(next - 1)`: the cursor condition, the order and the limit. Bind with [`Page::bind`].
    pub fn sql(&self, table: &str, next: usize, order: Order) -> String {
        let (compare, direction) = match order {
            Order::Oldest => (">", "ASC"),
            Order::Newest => ("<", "DESC"),
        };
        let mut sql = String::new();
        let mut bind = next;
        if self.after.is_some() {
            sql.push_str(&format!(
                " AND (created_at, id) {compare} \
                 (SELECT created_at, id FROM {table} WHERE id = ${bind})"
            ));
            bind += 1;
        }
        sql.push_str(&format!(
            " ORDER BY created_at {direction}, id {direction} LIMIT ${bind}"
        ));
        sql
    }

    /// Binds what [`Page::sql`] wrote: the cursor, then one row more than the page (to
    /// know whether another page follows).
    pub fn bind<'q>(
        &'q self,
        query: Query<'q, sqlx::Any, AnyArguments>,
    ) -> Query<'q, sqlx::Any, AnyArguments> {
        let query = match &self.after {
            Some(after) => query.bind(after.as_str()),
            None => query,
        };
        query.bind(i64::from(self.limit) + 1)
    }

    /// Keeps the page's rows; the cursor of the next page when more rows follow.
    pub fn split<T>(&self, mut rows: Vec<T>, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
        if rows.len() <= self.limit as usize {
            return (rows, None);
        }
        rows.truncate(self.limit as usize);
        let next = rows.last().map(|row| id(row).to_owned());
        (rows, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded_and_empty_cursors_ignored() {
        assert_eq!(Page::new(None, None), Some(Page::default()));
        assert_eq!(Page::new(Some(0), None), None);
        assert_eq!(Page::new(Some(MAX_LIMIT + 1), None), None);
        assert_eq!(
            Page::new(Some(5), Some(String::new())),
            Some(Page {
                limit: 5,
                after: None
            })
        );
    }

    #[test]
    fn the_tail_numbers_its_binds_after_the_callers() {
        let page = Page::new(Some(2), Some("usr_1".into())).unwrap();
        let sql = page.sql("users", 2, Order::Oldest);
        assert!(
            sql.contains("(created_at, id) > (SELECT created_at, id FROM users WHERE id = $2)")
        );
        assert!(
            sql.ends_with("ORDER BY created_at ASC, id ASC LIMIT $3"),
            "{sql}"
        );
        let first = Page::default().sql("jobs", 3, Order::Newest);
        assert_eq!(first, " ORDER BY created_at DESC, id DESC LIMIT $3");
    }

    #[test]
    fn lists_in_memory_page_after_their_cursor() {
        fn id(s: &String) -> &str {
            s
        }
        let rows = || ["a", "b", "c", "d"].map(String::from).to_vec();
        let first = Page::new(Some(2), None).unwrap();
        assert_eq!(
            first.slice(rows(), id),
            (vec!["a".into(), "b".into()], Some("b".into()))
        );
        let second = Page::new(Some(2), Some("b".into())).unwrap();
        assert_eq!(
            second.slice(rows(), id),
            (vec!["c".into(), "d".into()], None)
        );
        let gone = Page::new(Some(2), Some("x".into())).unwrap();
        assert_eq!(gone.slice(rows(), id), (vec![], None));
    }

    #[test]
    fn a_full_page_names_the_next_cursor() {
        let page = Page::new(Some(2), None).unwrap();
        fn id(s: &String) -> &str {
            s
        }
        let (rows, next) = page.split(vec!["a".to_owned(), "b".into(), "c".into()], id);
        assert_eq!((rows.len(), next.as_deref()), (2, Some("b")));
        let (rows, next) = page.split(vec!["a".to_owned(), "b".into()], id);
        assert_eq!((rows.len(), next), (2, None));
    }
}
