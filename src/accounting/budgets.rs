//! Budget counters: what each budget has spent this period and what requests in flight
//! have reserved. Pure bookkeeping under one lock; loading and persistence are the
//! caller's.
//!
//! The rule that keeps bursts honest: a request is admitted only while
//! `used + reserved < limit` for every budget that covers it, and admission adds its
//! estimated cost to `reserved` in the same critical section. So concurrent requests
//! cannot all pass a check on stale usage; a period can overshoot its limit by at most
//! what was in flight (the estimates were admitted while the budget still had room) and
//! a refusal only happens when settled plus reserved cost already reaches the limit.

use std::collections::HashMap;

/// `day` or `month`, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn parse(text: &str) -> Option<Period> {
        match text {
            "day" => Some(Period::Day),
            "month" => Some(Period::Month),
            _ => None,
        }
    }

    /// The start of the period containing `now_ms`, and the start of the next one.
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000;
        match self {
            Period::Day => {
                let start = now_ms.div_euclid(DAY) * DAY;
                (start, start + DAY)
            }
            Period::Month => {
                let date = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                    .date();
                let first = date.replace_day(1).unwrap_or(date);
                let next = match first.month() {
                    time::Month::December => first
                        .replace_year(first.year() + 1)
                        .and_then(|d| d.replace_month(time::Month::January)),
                    month => first.replace_month(month.next()),
                }
                .unwrap_or(first);
                let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
                (ms(first), ms(next))
            }
        }
    }
}

/// A budget as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub id: String,
    pub period: Period,
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counter {
    pub period_start: i64,
    pub used: f64,
    pub reserved: f64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub budget_id: String,
    pub limit: f64,
    pub used: f64,
    pub resets_at: i64,
}

/// Counters by budget id, for the current period of each.
#[derive(Debug, Default)]
pub struct Counters {
    counters: HashMap<String, Counter>,
}

impl Counters {
    /// Whether the counter of `budget` is loaded for the period containing `now`.
    pub fn is_current(&self, budget: &Budget, now: i64) -> bool {
        let (start, _) = budget.period.bounds(now);
        self.counters
            .get(&budget.id)
            .is_some_and(|c| c.period_start == start)
    }

    /// Installs a counter loaded from the records (keeps one already current: it has
    /// seen everything since).
    pub fn install(&mut self, budget: &Budget, period_start: i64, used: f64) {
        let current = self
            .counters
            .get(&budget.id)
            .is_some_and(|c| c.period_start == period_start);
        if !current {
            self.counters.insert(
                budget.id.clone(),
                Counter {
                    period_start,
                    used,
                    reserved: 0.0,
                },
            );
        }
    }

    pub fn get(&self, id: &str) -> Option<Counter> {
        self.counters.get(id).copied()
    }

    /// Admits `estimate` against every budget, or refuses naming the first one spent.
    /// Budgets must have current counters (see [`Counters::is_current`]).
    pub fn reserve(
        &mut self,
        budgets: &[Budget],
        estimate: f64,
        now: i64,
    ) -> Result<Vec<(String, i64)>, Exceeded> {
        for budget in budgets {
            let (start, end) = budget.period.bounds(now);
            let counter = self.counters.get(&budget.id).copied().unwrap_or(Counter {
                period_start: start,
                ..Counter::default()
            });
            if counter.used + counter.reserved >= budget.limit {
                return Err(Exceeded {
                    budget_id: budget.id.clone(),
                    limit: budget.limit,
                    used: counter.used,
                    resets_at: end,
                });
            }
        }
        let mut held = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let (start, _) = budget.period.bounds(now);
            let counter = self.counters.entry(budget.id.clone()).or_insert(Counter {
                period_start: start,
                ..Counter::default()
            });
            counter.reserved += estimate;
            held.push((budget.id.clone(), counter.period_start));
        }
        Ok(held)
    }

    /// Gives a reservation back (the request failed or settled).
    pub fn release(&mut self, held: &[(String, i64)], estimate: f64) {
        for (id, start) in held {
            if let Some(counter) = self.counters.get_mut(id)
                && counter.period_start == *start
            {
                counter.reserved = (counter.reserved - estimate).max(0.0);
            }
        }
    }

    /// Adds spent cost to the budgets' current counters. Returns the budgets this cost
    /// pushed over their limit (for `budget.exceeded` events).
    pub fn spend(&mut self, budgets: &[Budget], cost: f64, now: i64) -> Vec<String> {
        let mut crossed = Vec::new();
        for budget in budgets {
            let (start, _) = budget.period.bounds(now);
            if let Some(counter) = self.counters.get_mut(&budget.id)
                && counter.period_start == start
            {
                let before = counter.used;
                counter.used += cost;
                if before < budget.limit && counter.used >= budget.limit {
                    crossed.push(budget.id.clone());
                }
            }
        }
        crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: f64) -> Budget {
        Budget {
            id: "b".into(),
            period: Period::Day,
            limit,
        }
    }

    #[test]
    fn periods_are_utc_days_and_months() {
        // 2026-11-22T10:00:00Z
        let now = 1_795_341_600_000;
        let (start, end) = Period::Day.bounds(now);
        assert_eq!(start, 1_795_305_600_000);
        assert_eq!(end - start, 86_400_000);
        let (start, end) = Period::Month.bounds(now);
        assert_eq!(
            crate::records::Timestamp(start).to_rfc3339(),
            "2026-11-01T00:00:00Z"
        );
        assert_eq!(
            crate::records::Timestamp(end).to_rfc3339(),
            "2026-12-01T00:00:00Z"
        );
        let december = Period::Month.bounds(end + 1).1;
        assert_eq!(
            crate::records::Timestamp(december).to_rfc3339(),
            "2027-01-01T00:00:00Z"
        );
    }

    #[test]
    fn concurrent_reservations_stop_at_the_limit() {
        let budgets = [budget(5.0)];
        let mut counters = Counters::default();
        counters.install(&budgets[0], Period::Day.bounds(0).0, 0.0);
        let admitted = (0..20)
            .filter(|_| counters.reserve(&budgets, 1.0, 0).is_ok())
            .count();
        assert_eq!(admitted, 5, "in-flight reservations hold the budget");
        let refused = counters.reserve(&budgets, 1.0, 0).unwrap_err();
        assert_eq!(refused.limit, 5.0);
    }

    #[test]
    fn settling_replaces_the_estimate_with_the_cost() {
        let budgets = [budget(5.0)];
        let mut counters = Counters::default();
        counters.install(&budgets[0], 0, 0.0);
        let held = counters.reserve(&budgets, 3.0, 0).unwrap();
        counters.release(&held, 3.0);
        assert!(counters.spend(&budgets, 1.0, 0).is_empty());
        assert_eq!(counters.get("b").unwrap().used, 1.0);
        assert_eq!(counters.get("b").unwrap().reserved, 0.0);
        // Room left: never a false refusal.
        assert!(counters.reserve(&budgets, 1.0, 0).is_ok());
        assert_eq!(counters.spend(&budgets, 4.5, 0), vec!["b".to_owned()]);
        assert!(counters.reserve(&budgets, 0.0, 0).is_err());
    }

    #[test]
    fn a_new_period_starts_empty() {
        let budgets = [budget(1.0)];
        let mut counters = Counters::default();
        counters.install(&budgets[0], 0, 5.0);
        assert!(counters.reserve(&budgets, 0.0, 1000).is_err());
        let tomorrow = 86_400_000 + 5;
        assert!(!counters.is_current(&budgets[0], tomorrow));
        counters.install(&budgets[0], 86_400_000, 0.0);
        assert!(counters.reserve(&budgets, 0.5, tomorrow).is_ok());
    }
}
