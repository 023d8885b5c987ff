//! Token sampling over a logits row: greedy (temperature 0) or temperature sampling with a
//! seeded generator, identical in every mode so comparisons compare the model, not the sampler.

/// A sampler: greedy, or temperature and top-p sampling with its own seeded generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    top_p: f32,
    state: u64,
}

impl Sampler {
    /// Greedy when `temperature <= 0`, otherwise softmax sampling seeded by `seed`.
    pub fn new(temperature: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_p: 1.0,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Keeps only the most likely tokens whose probabilities add up to `top_p` (nucleus
    /// sampling); 1 keeps all.
    pub fn with_top_p(mut self, top_p: f32) -> Self {
        self.top_p = if top_p.is_finite() {
            top_p.clamp(0.0, 1.0)
        } else {
            1.0
        };
        self
    }

    fn next_f64(&mut self) -> f64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks a token id from `logits` with this sampler's temperature and top-p.
    pub fn sample(&mut self, logits: &[f32]) -> i32 {
        self.sample_with(logits, self.temperature, self.top_p)
    }

    /// Picks a token id from `logits` with the given temperature and top-p, advancing this
    /// sampler's random state.
    pub fn sample_with(&mut self, logits: &[f32], temperature: f32, top_p: f32) -> i32 {
        let saved = (self.temperature, self.top_p);
        self.temperature = temperature;
        self.top_p = if top_p.is_finite() {
            top_p.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let token = self.sample_inner(logits);
        (self.temperature, self.top_p) = saved;
        token
    }

    fn sample_inner(&mut self, logits: &[f32]) -> i32 {
        let argmax = logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0;
        if self.temperature <= 0.0 || logits.is_empty() {
            return argmax as i32;
        }
        let max = logits[argmax];
        let inv_t = 1.0 / self.temperature as f64;
        let mut candidates: Vec<(usize, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i, ((l - max) as f64 * inv_t).exp()))
            .collect();
        if self.top_p < 1.0 {
            // Keep the most likely tokens until their mass reaches top_p.
            let total: f64 = candidates.iter().map(|c| c.1).sum();
            candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut kept_mass = 0.0;
            let mut kept = 0;
            for c in &candidates {
                kept_mass += c.1;
                kept += 1;
                if kept_mass >= self.top_p as f64 * total {
                    break;
                }
            }
            candidates.truncate(kept.max(1));
        }
        let total: f64 = candidates.iter().map(|c| c.1).sum();
        let mut target = self.next_f64() * total;
        for (i, w) in &candidates {
            target -= w;
            if target <= 0.0 {
                return *i as i32;
            }
        }
        candidates.last().map_or(argmax, |c| c.0) as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(0.0, 1);
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn seeded_sampling_repeats_and_follows_the_distribution() {
        let logits = [0.0f32, 2.0, 0.0];
        let draw = |seed| {
            let mut s = Sampler::new(1.0, seed);
            (0..2000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let ones = draw(7).iter().filter(|&&t| t == 1).count();
        // p(1) = e^2 / (e^2 + 2) = 0.787
        assert!((1400..1750).contains(&ones), "{ones}");
    }

    #[test]
    fn top_p_cuts_the_tail() {
        // p = 0.66, 0.24, 0.09, 0.01: top-p 0.8 keeps the first two only
        let logits = [3.0f32, 2.0, 1.0, -1.0];
        let mut s = Sampler::new(1.0, 3).with_top_p(0.8);
        let draws: Vec<i32> = (0..3000).map(|_| s.sample(&logits)).collect();
        assert!(draws.iter().all(|&t| t == 0 || t == 1));
        assert!(draws.contains(&1));
        let mut tiny = Sampler::new(1.0, 3).with_top_p(0.0);
        assert!((0..100).all(|_| tiny.sample(&logits) == 0));
    }
}
