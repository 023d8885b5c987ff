//! Token sampling over a logits row: greedy (temperature 0) or temperature sampling with a
//! seeded generator, identical in every mode so comparisons compare the model, not the sampler.

/// A sampler.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f32,
    state: u64,
}

impl Sampler {
    /// Greedy when `temperature <= 0`, otherwise softmax sampling seeded by `seed`.
    pub fn new(temperature: f32, seed: u64) -> Self {
        Self {
            temperature,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
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

    /// Picks a token id from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> i32 {
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
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((l - max) as f64 * inv_t).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut target = self.next_f64() * total;
        for (i, w) in weights.iter().enumerate() {
            target -= w;
            if target <= 0.0 {
                return i as i32;
            }
        }
        argmax as i32
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
}
