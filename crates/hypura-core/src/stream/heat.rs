//! How often each expert of each layer is picked, as the chance that the layer's next
//! request picks it: an exponential moving average over the layer's requests (decayed by
//! [`ExpertHeat::DECAY`] per request of the layer, so an expert not picked for a while
//! cools down). The expert cache evicts the expert whose next use is expected furthest
//! ahead (below); the background reader fills free room hottest first; a saved profile
//! starts the next load with these chances.
//!
//! Layers run in order every token, so an expert's next use is predicted from both: its
//! layer comes again in `d` requests (1 for the next layer, `n` for the layer just served,
//! of `n` layers), and each time picks it with chance `p`, so its next use is expected
//! `d + n (1 - p) / p` requests ahead. The cache evicts the expert expected furthest ahead,
//! as Belady's optimum evicts the one needed furthest ahead: on a cyclic scan (every `p` =
//! 1) this is Belady's choice; for experts never picked, never.

use std::collections::BTreeMap;

/// One layer's experts: their chance as of the layer's request `updated`.
#[derive(Debug, Clone, Default)]
struct LayerHeat {
    /// Requests of this layer so far.
    requests: u64,
    /// Its place in the layer order (kept with it: the keep score asks on every eviction).
    position: usize,
    chance: Vec<f64>,
    updated: Vec<u64>,
}

impl LayerHeat {
    fn grow(&mut self, n: usize) {
        if self.chance.len() < n {
            self.chance.resize(n, 0.0);
            self.updated.resize(n, self.requests);
        }
    }

    fn chance_now(&self, expert: u32) -> f64 {
        let e = expert as usize;
        match (self.chance.get(e), self.updated.get(e)) {
            (Some(c), Some(u)) => c * ExpertHeat::DECAY.powi((self.requests - u) as i32),
            _ => 0.0,
        }
    }
}

/// Measured expert use, per layer (see the module's notes).
#[derive(Debug, Clone, Default)]
pub struct ExpertHeat {
    layers: BTreeMap<u32, LayerHeat>,
    /// Position (in layer order) of the layer served last.
    serving: Option<usize>,
}

/// One layer's chances in a saved profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct LayerChances {
    /// The layer.
    pub layer: u32,
    /// Expert `e`'s chance of being picked by the layer's next request, at index `e`.
    pub chances: Vec<f32>,
}

impl ExpertHeat {
    /// What a chance keeps of itself per request of its layer.
    pub const DECAY: f64 = 0.8;

    /// No use measured; `layers` are the layers with experts (more are added as seen).
    pub fn new(layers: impl IntoIterator<Item = u32>) -> Self {
        let mut heat = Self::default();
        for layer in layers {
            heat.add_layer(layer);
        }
        heat
    }

    /// Knows `layer` has experts (its place in the layer order counts for the keep score).
    pub fn add_layer(&mut self, layer: u32) {
        if self.layers.contains_key(&layer) {
            return;
        }
        self.layers.insert(layer, LayerHeat::default());
        for (position, heat) in self.layers.values_mut().enumerate() {
            heat.position = position;
        }
        // The layer served last may have moved in the order.
        self.serving = None;
    }

    /// Counts one request of `layer` that picked `experts` (distinct).
    pub fn record(&mut self, layer: u32, experts: &[u32]) {
        self.add_layer(layer);
        let Some(heat) = self.layers.get_mut(&layer) else {
            return;
        };
        heat.requests += 1;
        let top = experts.iter().max().map_or(0, |&e| e as usize + 1);
        heat.grow(top);
        for &e in experts {
            let now = heat.chance_now(e);
            let i = e as usize;
            heat.chance[i] = now + (1.0 - Self::DECAY);
            heat.updated[i] = heat.requests;
        }
        self.serving = Some(heat.position);
    }

    /// Requests recorded, all layers together.
    pub fn requests(&self) -> u64 {
        self.layers.values().map(|h| h.requests).sum()
    }

    /// The estimated chance that `layer`'s next request picks `expert`.
    pub fn chance(&self, layer: u32, expert: u32) -> f64 {
        self.layers
            .get(&layer)
            .map_or(0.0, |h| h.chance_now(expert))
    }

    /// How much `expert` of `layer` is worth keeping: the inverse of the requests until its
    /// next use is expected (see the module's notes; 0 for an expert never picked). The
    /// lowest goes first.
    pub fn keep_score(&self, layer: u32, expert: u32) -> f64 {
        let chance = self.chance(layer, expert);
        if chance <= 0.0 {
            return 0.0;
        }
        let n = self.layers.len().max(1);
        // Requests until the layer comes again: 1 for the next, n for the one just served.
        let until = match (self.serving, self.layers.get(&layer).map(|h| h.position)) {
            (Some(s), Some(p)) => (p + n - s - 1) % n + 1,
            _ => n,
        };
        1.0 / (until as f64 + n as f64 * (1.0 - chance) / chance)
    }

    /// Every layer's chances now, for a profile.
    pub fn chances(&self) -> Vec<LayerChances> {
        self.layers
            .iter()
            .map(|(&layer, h)| LayerChances {
                layer,
                chances: (0..h.chance.len() as u32)
                    .map(|e| h.chance_now(e) as f32)
                    .collect(),
            })
            .collect()
    }

    /// Starts from saved chances (values outside [0, 1] are clamped into it), for the layers
    /// it knows (others are left out).
    pub fn load(&mut self, saved: &[LayerChances]) {
        for s in saved {
            let Some(heat) = self.layers.get_mut(&s.layer) else {
                continue;
            };
            heat.grow(s.chances.len());
            for (e, &c) in s.chances.iter().enumerate() {
                heat.chance[e] = f64::from(c).clamp(0.0, 1.0);
                heat.updated[e] = heat.requests;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_experts_heat_up_and_unpicked_cool_down() {
        let mut heat = ExpertHeat::new([0, 1]);
        for _ in 0..30 {
            heat.record(0, &[2, 3]);
        }
        // Picked every time: the chance tends to 1.
        assert!(heat.chance(0, 2) > 0.95);
        assert_eq!(heat.chance(0, 0), 0.0);
        let hot = heat.chance(0, 2);
        heat.record(0, &[0, 1]);
        // One request later: 2 cooled by the decay, 0 warmed by one pick.
        assert!((heat.chance(0, 0) - (1.0 - ExpertHeat::DECAY)).abs() < 1e-12);
        assert!((heat.chance(0, 2) - hot * ExpertHeat::DECAY).abs() < 1e-12);
        // Another layer's requests leave it alone.
        let before = heat.chance(0, 2);
        heat.record(1, &[2]);
        assert_eq!(heat.chance(0, 2), before);
    }

    #[test]
    fn equally_hot_experts_of_the_layer_just_served_go_first() {
        let mut heat = ExpertHeat::new(0..4);
        for l in 0..4 {
            heat.record(l, &[0]);
        }
        // Layer 3 was served last: layer 0 comes next, layer 3 last.
        let scores: Vec<f64> = (0..4).map(|l| heat.keep_score(l, 0)).collect();
        assert!(scores[0] > scores[1] && scores[1] > scores[2] && scores[2] > scores[3]);
    }

    #[test]
    fn chances_round_trip_through_a_profile() {
        let mut heat = ExpertHeat::new([5]);
        heat.record(5, &[1]);
        heat.record(5, &[1, 2]);
        let saved = heat.chances();
        let mut loaded = ExpertHeat::new([5]);
        loaded.load(&saved);
        for e in 0..3 {
            assert!((loaded.chance(5, e) - heat.chance(5, e)).abs() < 1e-6);
        }
    }
}
