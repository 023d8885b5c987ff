//! Budgets: what the user may ask for (bytes of weights, a share of the weights, the whole
//! process's memory, or everything), parsed and resolved to bytes of weights in this one
//! place, for the CLI, the C API and the library alike.

use std::str::FromStr;

use crate::error::PlanError;
use crate::units::{format_bytes, parse_bytes};

/// How much memory hypura may use for the model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Budget {
    /// Every weight in RAM (nothing streams when it fits in the memory there is).
    #[default]
    AllWeights,
    /// At most this many bytes of weights in RAM (resident tensors, the streaming window and
    /// the embedding rows of one micro-batch).
    WeightBytes(u64),
    /// This share of the model's weight bytes, in percent (more than 0, at most 100).
    WeightPercent(f64),
    /// The whole process may use this many bytes: hypura subtracts what is not weights (the
    /// KV cache, llama.cpp's compute and output buffers, the reader buffers and the process
    /// itself, as estimated from the model and the options) and plans the weights in the
    /// rest.
    ProcessBytes(u64),
}

/// A budget that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size '{0}': use bytes with an optional K/M/G/T suffix (e.g. 512M, 2G) or a percentage (e.g. 40%)")]
pub struct InvalidBudget(pub String);

impl FromStr for Budget {
    type Err = InvalidBudget;

    /// `2G`, `512M`, `1.5GiB`, `4096` (bytes of weights), `40%` (of the weights), or `all`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Budget::AllWeights);
        }
        if let Some(pct) = t.strip_suffix('%') {
            let p: f64 = pct
                .trim()
                .parse()
                .map_err(|_| InvalidBudget(text.to_string()))?;
            if !(p.is_finite() && p > 0.0 && p <= 100.0) {
                return Err(InvalidBudget(text.to_string()));
            }
            return Ok(Budget::WeightPercent(p));
        }
        parse_bytes(t)
            .map(Budget::WeightBytes)
            .ok_or_else(|| InvalidBudget(text.to_string()))
    }
}

/// What the process holds besides weights, as estimated before loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NonWeightCosts {
    /// The KV cache.
    pub kv_cache_bytes: u64,
    /// llama.cpp's activation buffers.
    pub compute_bytes: u64,
    /// llama.cpp's logits buffer.
    pub output_bytes: u64,
    /// hypura's reader buffers.
    pub io_buffer_bytes: u64,
    /// The process, its libraries, the vocabulary and llama.cpp's model metadata.
    pub process_bytes: u64,
}

impl NonWeightCosts {
    pub fn total(&self) -> u64 {
        self.kv_cache_bytes
            + self.compute_bytes
            + self.output_bytes
            + self.io_buffer_bytes
            + self.process_bytes
    }
}

impl Budget {
    /// Bytes of weights this budget allows for a model of `model_bytes`, when that does not
    /// depend on anything but the model's size (`None` for [`Budget::ProcessBytes`], and for
    /// a zero or out-of-range value).
    pub fn weights_of(self, model_bytes: u64) -> Option<u64> {
        match self {
            Budget::AllWeights => Some(model_bytes),
            Budget::WeightBytes(b) => (b > 0).then_some(b),
            Budget::WeightPercent(p) if p.is_finite() && p > 0.0 && p <= 100.0 => {
                Some(((model_bytes as f64) * p / 100.0).round().max(1.0) as u64)
            }
            Budget::WeightPercent(_) | Budget::ProcessBytes(_) => None,
        }
    }

    /// Bytes of weights this budget allows for a model of `model_bytes`, with `costs` the
    /// estimate of everything else (used by [`Budget::ProcessBytes`]).
    pub(crate) fn weight_bytes(
        self,
        model_bytes: u64,
        costs: &NonWeightCosts,
        path: &std::path::Path,
    ) -> Result<u64, PlanError> {
        if let Some(bytes) = self.weights_of(model_bytes) {
            return Ok(bytes);
        }
        match self {
            Budget::WeightBytes(_) | Budget::AllWeights => Err(PlanError::InvalidOption(
                "the RAM budget must be more than 0 bytes".into(),
            )),
            Budget::WeightPercent(p) => Err(PlanError::InvalidOption(format!(
                "a RAM budget of {p}% is not in (0, 100]"
            ))),
            Budget::ProcessBytes(total) => {
                let other = costs.total();
                total
                    .checked_sub(other)
                    .filter(|w| *w > 0)
                    .ok_or_else(|| PlanError::BudgetTooSmall {
                        path: path.to_path_buf(),
                        budget: format_bytes(total),
                        minimum: format_bytes(other + 1),
                        why: format!(
                            "the KV cache ({}), llama.cpp's buffers ({}), reader buffers ({}) and the process ({}) come before any weight",
                            format_bytes(costs.kv_cache_bytes),
                            format_bytes(costs.compute_bytes + costs.output_bytes),
                            format_bytes(costs.io_buffer_bytes),
                            format_bytes(costs.process_bytes)
                        ),
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_percentages_and_all() {
        assert_eq!("512M".parse::<Budget>(), Ok(Budget::WeightBytes(512 << 20)));
        assert_eq!("2GiB".parse::<Budget>(), Ok(Budget::WeightBytes(2 << 30)));
        assert_eq!("40%".parse::<Budget>(), Ok(Budget::WeightPercent(40.0)));
        assert_eq!("all".parse::<Budget>(), Ok(Budget::AllWeights));
        for bad in ["", "0", "0%", "101%", "nan%", "-5%", "lots", "12X"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn resolves_each_kind_to_weight_bytes() {
        let path = std::path::Path::new("m.gguf");
        let costs = NonWeightCosts {
            kv_cache_bytes: 100,
            compute_bytes: 50,
            output_bytes: 10,
            io_buffer_bytes: 20,
            process_bytes: 20,
        };
        assert_eq!(
            Budget::AllWeights.weight_bytes(1000, &costs, path).unwrap(),
            1000
        );
        assert_eq!(
            Budget::WeightBytes(300)
                .weight_bytes(1000, &costs, path)
                .unwrap(),
            300
        );
        assert_eq!(
            Budget::WeightPercent(25.0)
                .weight_bytes(1000, &costs, path)
                .unwrap(),
            250
        );
        assert_eq!(
            Budget::ProcessBytes(900)
                .weight_bytes(1000, &costs, path)
                .unwrap(),
            700
        );
        let err = Budget::ProcessBytes(150)
            .weight_bytes(1000, &costs, path)
            .unwrap_err();
        assert!(err.to_string().contains("at least 201 B"), "{err}");
        assert!(Budget::WeightPercent(0.0)
            .weight_bytes(1000, &costs, path)
            .is_err());
    }
}
