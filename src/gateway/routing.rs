//! The order in which a model's backends are tried (pure).
//!
//! Routes with the lowest `priority` come first; within one priority the order is a
//! weighted random permutation (a backend with twice the weight is first twice as
//! often), so weights spread load and the rest of the group is the fallback; higher
//! priorities are fallbacks in turn. Backends that are not usable (breaker open,
//! health probe failing, deleted) are left out.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub backend_id: String,
    /// Share of traffic within its priority (default 1; 0 = only as a fallback).
    #[serde(default = "one")]
    pub weight: u32,
    /// Lower is tried first (default 0).
    #[serde(default)]
    pub priority: u32,
    /// The model name sent upstream (default: the part of the slug after `/`).
    #[serde(default)]
    pub upstream_model: Option<String>,
}

fn one() -> u32 {
    1
}

/// Indices into `routes` in the order to try them. `random` yields numbers in [0, 1).
pub fn order(
    routes: &[Route],
    usable: impl Fn(&str) -> bool,
    mut random: impl FnMut() -> f64,
) -> Vec<usize> {
    let mut priorities: Vec<u32> = routes.iter().map(|r| r.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    let mut out = Vec::with_capacity(routes.len());
    for priority in priorities {
        let mut group: Vec<usize> = (0..routes.len())
            .filter(|&i| routes[i].priority == priority && usable(&routes[i].backend_id))
            .collect();
        while !group.is_empty() {
            let total: u64 = group.iter().map(|&i| u64::from(routes[i].weight)).sum();
            let pick = if total == 0 {
                0
            } else {
                let mut target = random() * total as f64;
                let mut chosen = group.len() - 1;
                for (position, &i) in group.iter().enumerate() {
                    let weight = f64::from(routes[i].weight);
                    if weight > 0.0 && target < weight {
                        chosen = position;
                        break;
                    }
                    target -= weight;
                }
                chosen
            };
            out.push(group.remove(pick));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, weight: u32, priority: u32) -> Route {
        Route {
            backend_id: id.into(),
            weight,
            priority,
            upstream_model: None,
        }
    }

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn weights_split_first_choices() {
        let routes = [route("a", 3, 0), route("b", 1, 0), route("c", 5, 1)];
        let mut random = rng(42);
        let mut first_a = 0;
        for _ in 0..10_000 {
            let order = order(&routes, |_| true, &mut random);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], 2, "the higher priority is the last fallback");
            if order[0] == 0 {
                first_a += 1;
            }
        }
        assert!((7300..7700).contains(&first_a), "{first_a}");
    }

    #[test]
    fn unusable_backends_are_skipped_and_zero_weight_is_a_fallback() {
        let routes = [route("a", 1, 0), route("b", 0, 0), route("c", 1, 2)];
        let order = order(&routes, |id| id != "a", rng(7));
        assert_eq!(order, vec![1, 2]);
        let all = super::order(&routes, |_| true, rng(9));
        assert_eq!(all, vec![0, 1, 2]);
    }
}
