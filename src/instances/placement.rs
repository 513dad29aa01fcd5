//! Where an instance goes: pure logic over what the nodes report. A node is a
//! candidate when it is ready and meets every smart constraint (region, capacity
//! tier, max price); a candidate fits when it carries the model already or has the
//! memory free for it. The scheduler takes the cheapest fitting nodes, then the least
//! busy, one per replica. When none will do, the refusal says why in the seed's
//! terms: `SMART_NO_MATCH` naming the constraint that excluded the most nodes, or
//! `GPU_INCOMPATIBLE` with the model's need and the best free figure.

use serde::Deserialize;

/// The smart constraints of a launch (each optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Smart {
    /// Highest `price_per_hour` (cost units) a node may have.
    pub max_price: Option<f64>,
    pub region: Option<String>,
    pub capacity_tier: Option<String>,
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node_id: String,
    pub ready: bool,
    pub region: String,
    pub capacity_tier: String,
    pub price_per_hour: f64,
    /// What one more model may take there now (MB).
    pub available_mb: u64,
    /// It has the model loaded already.
    pub carries: bool,
    pub load: u32,
}

/// Why nothing will do.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No node meets the constraints; `constraint` excluded the most of them
    /// (`online`, `region`, `capacity_tier`, `max_price`, or `replicas` when too few
    /// are left for the replicas asked), with each constraint's count.
    NoMatch {
        constraint: &'static str,
        excluded: Vec<(&'static str, usize)>,
        eligible: usize,
    },
    /// Nodes meet the constraints, but too few have the memory for the model.
    TooLarge {
        needed_mb: u64,
        best_available_mb: u64,
        fitting: usize,
    },
}

/// The nodes for `replicas` replicas of a model needing `needed_mb`, cheapest first,
/// then least busy, each node once.
pub fn place(
    candidates: &[Candidate],
    smart: &Smart,
    needed_mb: u64,
    replicas: usize,
) -> Result<Vec<String>, Refusal> {
    let mut excluded: Vec<(&'static str, usize)> =
        ["online", "region", "capacity_tier", "max_price"]
            .into_iter()
            .map(|name| (name, 0))
            .collect();
    let mut eligible: Vec<&Candidate> = Vec::new();
    for candidate in candidates {
        let failed = [
            !candidate.ready,
            smart
                .region
                .as_ref()
                .is_some_and(|r| *r != candidate.region),
            smart
                .capacity_tier
                .as_ref()
                .is_some_and(|t| *t != candidate.capacity_tier),
            smart
                .max_price
                .is_some_and(|max| candidate.price_per_hour > max),
        ];
        for (count, failed) in excluded.iter_mut().zip(failed) {
            count.1 += usize::from(failed);
        }
        if !failed.contains(&true) {
            eligible.push(candidate);
        }
    }
    if eligible.len() < replicas {
        // The constraint that excluded the most (the first named on a tie); with
        // candidates left but too few, the replicas asked.
        let most = excluded
            .iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .filter(|(_, count)| *count > 0 && eligible.is_empty())
            .map_or("replicas", |(name, _)| *name);
        return Err(Refusal::NoMatch {
            constraint: most,
            excluded,
            eligible: eligible.len(),
        });
    }
    let mut fitting: Vec<&Candidate> = eligible
        .iter()
        .copied()
        .filter(|c| c.carries || c.available_mb >= needed_mb)
        .collect();
    if fitting.len() < replicas {
        return Err(Refusal::TooLarge {
            needed_mb,
            best_available_mb: eligible.iter().map(|c| c.available_mb).max().unwrap_or(0),
            fitting: fitting.len(),
        });
    }
    fitting.sort_by(|a, b| {
        a.price_per_hour
            .total_cmp(&b.price_per_hour)
            .then(a.load.cmp(&b.load))
            .then(a.node_id.cmp(&b.node_id))
    });
    Ok(fitting
        .into_iter()
        .take(replicas)
        .map(|c| c.node_id.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, price: f64, available_mb: u64) -> Candidate {
        Candidate {
            node_id: id.into(),
            ready: true,
            region: region.into(),
            capacity_tier: "standard".into(),
            price_per_hour: price,
            available_mb,
            carries: false,
            load: 0,
        }
    }

    #[test]
    fn the_cheapest_fitting_nodes_win_then_the_least_busy() {
        let mut busy = node("b", "eu", 1.0, 4000);
        busy.load = 3;
        let nodes = [
            node("a", "eu", 2.0, 4000),
            busy,
            node("c", "eu", 1.0, 4000),
            node("d", "us", 0.5, 4000),
        ];
        let smart = Smart {
            region: Some("eu".into()),
            ..Smart::default()
        };
        assert_eq!(place(&nodes, &smart, 700, 2).unwrap(), ["c", "b"]);
        assert_eq!(place(&nodes, &Smart::default(), 700, 1).unwrap(), ["d"]);
    }

    #[test]
    fn no_match_names_the_constraint_that_excluded_the_most() {
        let mut offline = node("x", "eu", 1.0, 4000);
        offline.ready = false;
        let nodes = [
            node("a", "eu", 5.0, 4000),
            node("b", "us", 5.0, 4000),
            node("c", "us", 1.0, 4000),
            offline,
        ];
        let smart = Smart {
            region: Some("eu".into()),
            max_price: Some(2.0),
            ..Smart::default()
        };
        match place(&nodes, &smart, 100, 1) {
            Err(Refusal::NoMatch {
                constraint,
                excluded,
                eligible: 0,
            }) => {
                // Region and price excluded two each: a tie goes to the first named.
                assert_eq!(constraint, "region");
                assert_eq!(excluded[0], ("online", 1));
                assert_eq!(excluded[1], ("region", 2));
                assert_eq!(excluded[3], ("max_price", 2));
            }
            other => panic!("{other:?}"),
        }
        let tier = Smart {
            capacity_tier: Some("gpu".into()),
            ..Smart::default()
        };
        assert!(matches!(
            place(&nodes, &tier, 100, 1),
            Err(Refusal::NoMatch {
                constraint: "capacity_tier",
                ..
            })
        ));
        assert!(matches!(
            place(&nodes[..1], &Smart::default(), 100, 2),
            Err(Refusal::NoMatch {
                constraint: "replicas",
                eligible: 1,
                ..
            })
        ));
        assert!(matches!(
            place(&[], &Smart::default(), 100, 1),
            Err(Refusal::NoMatch {
                constraint: "replicas",
                eligible: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_model_too_large_for_every_candidate_says_the_best_free_figure() {
        let mut carrying = node("c", "eu", 1.0, 10);
        let nodes = [node("a", "eu", 1.0, 300), node("b", "eu", 1.0, 450)];
        match place(&nodes, &Smart::default(), 700, 1) {
            Err(Refusal::TooLarge {
                needed_mb: 700,
                best_available_mb: 450,
                fitting: 0,
            }) => {}
            other => panic!("{other:?}"),
        }
        // A node that carries the model already needs no room for it.
        carrying.carries = true;
        assert_eq!(
            place(&[nodes[0].clone(), carrying], &Smart::default(), 700, 1).unwrap(),
            ["c"]
        );
    }
}
