//! Replays the expert cache's request trace (`expert_trace` in `hypura run --stats-json`)
//! against cache policies at one capacity, counted in experts (one expert of one layer,
//! every expert tensor's slice of it), so that hypura's policy can be measured against the
//! optimum:
//! - Belady's offline optimum (evict what is needed again furthest in the future);
//! - least recently used, over all layers;
//! - hypura's: keep what is most likely to be picked by its layer's next request (measured
//!   use, decayed: [`ExpertHeat`], the very code the expert cache runs), those of the layers
//!   coming soonest when about even;
//! - hypura's before: evict what is predicted to be needed furthest ahead, assuming layers
//!   run in order and repeat their previous picks (units not repeated since go first);
//! - the best fixed set, chosen offline (the most picked experts, held all along);
//! - an even share of the capacity per layer: evict from the layer holding most above it
//!   (another layer than the one being served first), its least recently used (hypura's
//!   policy before the prediction).
//!
//! A request (one layer's picks for one batch) needs all its experts held at once; they are
//! not evicted while it is served. Also measures the routing itself: how evenly each layer
//! spreads its picks (entropy), and how many picks a layer repeats from its previous batch.

use std::collections::{BTreeSet, HashMap, HashSet};

use hypura_core::{ExpertHeat, ExpertRequest};

/// An expert of a layer: (layer, expert).
type Unit = (u32, u32);

/// Hits and misses of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyResult {
    /// The policy's name.
    pub policy: &'static str,
    /// Experts a request found held.
    pub hits: u64,
    /// Experts a request had to read.
    pub misses: u64,
}

impl PolicyResult {
    /// Hits over all experts requested (0 without requests).
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / (self.hits + self.misses).max(1) as f64
    }
}

/// The trace's routing, measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingStats {
    /// Requests replayed.
    pub requests: usize,
    /// Mean over the layers of the entropy of their experts' popularity, over the largest
    /// possible for the experts seen in the layer (1: every expert picked equally often).
    pub normalized_entropy: f64,
    /// Share of picks a layer repeats from its previous request.
    pub reused_share: f64,
}

/// Why a trace could not be replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The capacity cannot hold the largest request.
    #[error("a capacity of {capacity} experts cannot hold a request of {largest}")]
    CapacityTooSmall {
        /// The capacity asked for.
        capacity: usize,
        /// The largest request's experts.
        largest: usize,
    },
}

fn units(r: &ExpertRequest) -> Vec<Unit> {
    let mut seen = HashSet::new();
    r.experts
        .iter()
        .map(|&e| (r.layer, e))
        .filter(|u| seen.insert(*u))
        .collect()
}

/// Replays `trace` with every policy at `capacity` experts.
pub fn simulate(trace: &[ExpertRequest], capacity: usize) -> Result<Vec<PolicyResult>, SimError> {
    let requests: Vec<Vec<Unit>> = trace.iter().map(units).collect();
    let largest = requests.iter().map(Vec::len).max().unwrap_or(0);
    if largest > capacity {
        return Err(SimError::CapacityTooSmall { capacity, largest });
    }
    Ok(vec![
        belady(&requests, capacity),
        lru(&requests, capacity),
        layer_share(&requests, capacity),
        next_use(&requests, capacity),
        heat(&requests, capacity),
        best_fixed_set(&requests, capacity),
    ])
}

/// The best the cache could do holding one set of experts the whole run (each read at its
/// first pick), chosen knowing
/// the whole trace (the most picked): what frequency alone can reach. Near-uniform routing
/// leaves any policy that does not know the future about here, capacity / experts.
fn best_fixed_set(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    let mut picks: HashMap<Unit, u64> = HashMap::new();
    for u in requests.iter().flatten() {
        *picks.entry(*u).or_default() += 1;
    }
    let mut counts: Vec<u64> = picks.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = counts.iter().sum();
    // Each held expert is read once, at its first pick.
    let hits: u64 = counts.iter().take(capacity).map(|c| c - 1).sum();
    PolicyResult {
        policy: "best fixed set (offline)",
        hits,
        misses: total - hits,
    }
}

/// How far frequency carries beyond the trace it was measured on: on the trace's second
/// half, the hit rates of a set of experts held all along (already read when the half
/// begins), chosen from the first half's picks (what a saved profile gives the next run),
/// and chosen from the second half's own (the offline best, which knows what will be
/// picked). Under near-uniform routing the first is near capacity / experts, whatever the
/// second: the best fixed set's edge is hindsight, not a frequency any policy could learn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holdout {
    /// Picks in the second half.
    pub picks: u64,
    /// Hit rate of the set chosen on the first half.
    pub learnt: f64,
    /// Hit rate of the set chosen on the second half itself.
    pub hindsight: f64,
}

/// See [`Holdout`]; `None` for a trace of fewer than two requests.
pub fn holdout(trace: &[ExpertRequest], capacity: usize) -> Option<Holdout> {
    if trace.len() < 2 {
        return None;
    }
    let (first, second) = trace.split_at(trace.len() / 2);
    let count = |half: &[ExpertRequest]| {
        let mut picks: HashMap<Unit, u64> = HashMap::new();
        for u in half.iter().flat_map(units) {
            *picks.entry(u).or_default() += 1;
        }
        picks
    };
    let top = |picks: &HashMap<Unit, u64>| -> HashSet<Unit> {
        let mut ranked: Vec<(&Unit, &u64)> = picks.iter().collect();
        // Most picked first; ties in a fixed order, so that the result is reproducible.
        ranked.sort_unstable_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        ranked.into_iter().take(capacity).map(|(u, _)| *u).collect()
    };
    let scored = count(second);
    let picks: u64 = scored.values().sum();
    let rate = |held: &HashSet<Unit>| {
        let hits: u64 = held.iter().filter_map(|u| scored.get(u)).sum();
        hits as f64 / picks.max(1) as f64
    };
    Some(Holdout {
        picks,
        learnt: rate(&top(&count(first))),
        hindsight: rate(&top(&scored)),
    })
}

/// Replays `requests` through a cache of `capacity` units, the online policies' common
/// part: `on_request` sees each request first; a unit held is a hit; a missing one is read,
/// after `victim` (when the cache is full) has named one to evict among the held units it
/// is offered (with the request of their last use, and the current request's number),
/// never one of the current request. Returns (hits, misses).
fn replay(
    requests: &[Vec<Unit>],
    capacity: usize,
    mut on_request: impl FnMut(&[Unit]),
    mut victim: impl FnMut(&HashMap<Unit, usize>, &[(Unit, usize)], usize) -> Option<Unit>,
) -> (u64, u64) {
    let mut last_use: HashMap<Unit, usize> = HashMap::new();
    let (mut hits, mut misses) = (0, 0);
    for (clock, request) in requests.iter().enumerate() {
        let clock = clock + 1;
        on_request(request);
        for u in request {
            if let Some(t) = last_use.get_mut(u) {
                *t = clock;
                hits += 1;
                continue;
            }
            misses += 1;
            if last_use.len() >= capacity {
                let evictable: Vec<(Unit, usize)> = last_use
                    .iter()
                    .filter(|(v, t)| **t < clock && !request.contains(v))
                    .map(|(v, t)| (*v, *t))
                    .collect();
                if let Some(v) = victim(&last_use, &evictable, clock) {
                    last_use.remove(&v);
                }
            }
            last_use.insert(*u, clock);
        }
    }
    (hits, misses)
}

/// hypura's: evicts the expert whose next use is expected furthest ahead, from its
/// measured use (decayed) and how soon its layer comes ([`ExpertHeat`], the expert cache's
/// own code).
fn heat(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    let layers: HashSet<u32> = requests.iter().flatten().map(|u| u.0).collect();
    let heat = std::cell::RefCell::new(ExpertHeat::new(layers));
    let (hits, misses) = replay(
        requests,
        capacity,
        |request| {
            if let Some(layer) = request.first().map(|u| u.0) {
                let experts: Vec<u32> = request.iter().map(|u| u.1).collect();
                heat.borrow_mut().record(layer, &experts);
            }
        },
        |_, evictable, _| {
            let heat = heat.borrow();
            evictable.iter().map(|(v, _)| *v).min_by(|a, b| {
                heat.keep_score(a.0, a.1)
                    .total_cmp(&heat.keep_score(b.0, b.1))
                    .then(a.cmp(b))
            })
        },
    );
    PolicyResult {
        policy: "hypura (measured use)",
        hits,
        misses,
    }
}

/// Evicts what is predicted to be needed furthest ahead, assuming layers run in order and
/// a layer repeats its previous picks: a unit used at request `t` is predicted again at
/// `t + n_layers`. Units already past their prediction (not repeated since) go first, the
/// longest unused first; among the others, the one predicted furthest ahead.
fn next_use(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    let n_layers = requests
        .iter()
        .flatten()
        .map(|u| u.0)
        .collect::<HashSet<_>>()
        .len()
        .max(1);
    let (hits, misses) = replay(
        requests,
        capacity,
        |_| {},
        |_, evictable, clock| {
            evictable
                .iter()
                .max_by_key(|(v, t)| {
                    let predicted = *t + n_layers;
                    if predicted <= clock {
                        (1, clock - *t, *v)
                    } else {
                        (0, predicted, *v)
                    }
                })
                .map(|(v, _)| *v)
        },
    );
    PolicyResult {
        policy: "next use predicted (hypura's before 2026-11-30)",
        hits,
        misses,
    }
}

fn belady(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    // For each request and unit in it: the index of the unit's next request (usize::MAX:
    // never again).
    let mut next_seen: HashMap<Unit, usize> = HashMap::new();
    let mut next_use: Vec<Vec<usize>> = vec![Vec::new(); requests.len()];
    for (i, request) in requests.iter().enumerate().rev() {
        next_use[i] = request
            .iter()
            .map(|u| next_seen.get(u).copied().unwrap_or(usize::MAX))
            .collect();
        for u in request {
            next_seen.insert(*u, i);
        }
    }
    let mut held: HashMap<Unit, usize> = HashMap::new();
    let mut by_next: BTreeSet<(usize, Unit)> = BTreeSet::new();
    let (mut hits, mut misses) = (0, 0);
    for (i, request) in requests.iter().enumerate() {
        let current: HashSet<Unit> = request.iter().copied().collect();
        for (u, &next) in request.iter().zip(&next_use[i]) {
            if let Some(old) = held.get(u).copied() {
                hits += 1;
                by_next.remove(&(old, *u));
            } else {
                misses += 1;
                if held.len() >= capacity {
                    // The held unit needed furthest ahead, not one this request needs.
                    let victim = by_next
                        .iter()
                        .rev()
                        .find(|(_, v)| !current.contains(v))
                        .copied();
                    if let Some(v) = victim {
                        by_next.remove(&v);
                        held.remove(&v.1);
                    }
                }
            }
            held.insert(*u, next);
            by_next.insert((next, *u));
        }
    }
    PolicyResult {
        policy: "belady (optimal)",
        hits,
        misses,
    }
}

/// Least recently used, globally (`per_layer_share`: hypura's layer shares first).
fn replay_recency(requests: &[Vec<Unit>], capacity: usize, per_layer_share: bool) -> (u64, u64) {
    let layers: HashSet<u32> = requests.iter().flatten().map(|u| u.0).collect();
    let share = capacity / layers.len().max(1);
    let serving = std::cell::Cell::new(0u32);
    replay(
        requests,
        capacity,
        |request| serving.set(request.first().map_or(0, |u| u.0)),
        |held, evictable, _| {
            let layer = if per_layer_share {
                let mut held_by_layer: HashMap<u32, usize> = HashMap::new();
                for v in held.keys() {
                    *held_by_layer.entry(v.0).or_default() += 1;
                }
                evictable.iter().map(|(v, _)| v.0).max_by_key(|&l| {
                    let held = held_by_layer.get(&l).copied().unwrap_or(0);
                    (
                        l != serving.get(),
                        held.saturating_sub(share),
                        held,
                        u32::MAX - l,
                    )
                })
            } else {
                None
            };
            evictable
                .iter()
                .filter(|(v, _)| layer.is_none_or(|l| v.0 == l))
                .min_by_key(|(v, t)| (*t, *v))
                .map(|(v, _)| *v)
        },
    )
}

fn lru(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    let (hits, misses) = replay_recency(requests, capacity, false);
    PolicyResult {
        policy: "lru (global)",
        hits,
        misses,
    }
}

fn layer_share(requests: &[Vec<Unit>], capacity: usize) -> PolicyResult {
    let (hits, misses) = replay_recency(requests, capacity, true);
    PolicyResult {
        policy: "layer share, then lru",
        hits,
        misses,
    }
}

/// How `trace` routes: popularity entropy per layer and picks repeated from the layer's
/// previous request.
pub fn routing(trace: &[ExpertRequest]) -> RoutingStats {
    let mut counts: HashMap<u32, HashMap<u32, u64>> = HashMap::new();
    let mut previous: HashMap<u32, HashSet<u32>> = HashMap::new();
    let (mut picks, mut reused) = (0u64, 0u64);
    for r in trace {
        let picked: HashSet<u32> = r.experts.iter().copied().collect();
        if let Some(prev) = previous.get(&r.layer) {
            picks += picked.len() as u64;
            reused += picked.intersection(prev).count() as u64;
        }
        for e in &picked {
            *counts.entry(r.layer).or_default().entry(*e).or_default() += 1;
        }
        previous.insert(r.layer, picked);
    }
    let entropies: Vec<f64> = counts
        .values()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let total: u64 = c.values().sum();
            let h: f64 = c
                .values()
                .map(|&n| {
                    let p = n as f64 / total as f64;
                    -p * p.ln()
                })
                .sum();
            h / (c.len() as f64).ln()
        })
        .collect();
    RoutingStats {
        requests: trace.len(),
        normalized_entropy: if entropies.is_empty() {
            0.0
        } else {
            entropies.iter().sum::<f64>() / entropies.len() as f64
        },
        reused_share: reused as f64 / picks.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(layer: u32, experts: &[u32]) -> ExpertRequest {
        serde_json::from_value(serde_json::json!({ "layer": layer, "experts": experts })).unwrap()
    }

    /// Four layers, each picking the same two experts every token, for 10 tokens: 80 units
    /// requested, 8 distinct.
    fn cyclic() -> Vec<ExpertRequest> {
        (0..10)
            .flat_map(|_| (0..4).map(|l| request(l, &[0, 1])))
            .collect()
    }

    #[test]
    fn a_cyclic_scan_defeats_lru_not_the_layer_share() {
        let trace = cyclic();
        let results = simulate(&trace, 6).unwrap();
        let by = |name: &str| *results.iter().find(|r| r.policy.starts_with(name)).unwrap();
        // LRU evicts exactly what comes next: nothing but misses.
        assert_eq!(by("lru").hits, 0);
        // The optimum: a cyclic scan of 4 layers through room for 3 misses one layer
        // request in 3 once warm (Belady on a loop of n + 1 items with room for n): 8 first
        // misses, then 24 over the 36 requests left.
        let optimum = by("belady");
        assert_eq!((optimum.hits, optimum.misses), (48, 32));
        // Layer shares (6 / 4 = 1 each) keep about one expert of each layer: near the
        // optimum, where LRU gets nothing.
        assert_eq!((by("layer share").hits, by("layer share").misses), (45, 35));
        // Predicting the next use from the layer order is the optimum on a loop. Measured
        // use predicts it too once every chance is near 1: it misses 2 more while the
        // chances warm up (layers served later in the first tokens look colder).
        assert_eq!(by("next use").hits, optimum.hits);
        assert_eq!(by("hypura").hits, optimum.hits - 2);
        // Room for everything: only the 8 first reads miss, whatever the policy.
        for r in simulate(&trace, 8).unwrap() {
            assert_eq!((r.hits, r.misses), (72, 8), "{}", r.policy);
        }
    }

    #[test]
    fn a_request_larger_than_the_capacity_is_refused() {
        assert!(matches!(
            simulate(&[request(0, &[0, 1, 2])], 2),
            Err(SimError::CapacityTooSmall { largest: 3, .. })
        ));
    }

    #[test]
    fn holdout_scores_the_first_halfs_set_on_the_second() {
        // Layer 0 picks expert 0 then 1 in the first half, 2 in the second: the set learnt
        // (two experts) misses all of the second half, which hindsight hits every time.
        let mut trace: Vec<ExpertRequest> = (0..4).map(|i| request(0, &[i % 2])).collect();
        trace.extend((0..4).map(|_| request(0, &[2])));
        let h = holdout(&trace, 2).unwrap();
        assert_eq!(h.picks, 4);
        assert_eq!(h.learnt, 0.0);
        assert_eq!(h.hindsight, 1.0);
        assert_eq!(holdout(&trace[..1], 2), None);
    }

    #[test]
    fn routing_measures_spread_and_reuse() {
        let stats = routing(&cyclic());
        assert_eq!(stats.requests, 40);
        assert!((stats.normalized_entropy - 1.0).abs() < 1e-9);
        assert!((stats.reused_share - 1.0).abs() < 1e-9);
        let skewed = routing(&[
            request(0, &[0]),
            request(0, &[1]),
            request(0, &[0]),
            request(0, &[0]),
        ]);
        assert!(skewed.normalized_entropy < 1.0);
        assert!((skewed.reused_share - 1.0 / 3.0).abs() < 1e-9);
    }
}
