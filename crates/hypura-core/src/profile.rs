//! Saved expert use: a small JSON file per model (named by the model's identity, a hash of
//! its GGUF header and size) holding each layer's experts' chances of being picked
//! ([`crate::ExpertHeat`]). A load that finds one starts its expert cache from it (the
//! background reader reads the hottest experts first), and `plan` predicts the cache's hit
//! rate and bound from it. hypura writes it when asked ([`crate::Model::save_expert_profile`];
//! the CLI does after every run), never beside or into the model file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::stream::heat::LayerChances;

/// The format this build writes and reads.
const FORMAT: u32 = 1;
/// Largest profile file read (a 1024-expert, 4096-layer model's is about 40 MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;
/// Most experts per layer a profile may list (as many as a model may have).
const MAX_EXPERTS: usize = 1024;

/// One model's saved expert use.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ExpertProfile {
    /// The file format (1).
    pub format: u32,
    /// The model's identity (`model_key`).
    pub model: String,
    /// Requests the chances were measured over, all runs together.
    pub requests: u64,
    /// Each layer's chances.
    pub layers: Vec<LayerChances>,
}

/// Why a profile could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Reading or writing the file failed.
    #[error("expert profile {path}: {source}")]
    Io {
        /// The profile file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a profile this build reads.
    #[error("expert profile {path}: {why}")]
    Invalid {
        /// The profile file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The identity of a model: a 64-bit FNV-1a hash of its GGUF header (metadata and tensor
/// table) and its size, in hex. Another file with the same header and size is the same
/// model for this purpose (the profile only guides caching; it never changes results).
pub(crate) fn model_key(header: &[u8], file_size: u64) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in header.iter().chain(&file_size.to_le_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The profile file of the model `key` in `dir`.
pub(crate) fn path_in(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.json"))
}

impl ExpertProfile {
    /// A profile of model `key` with `layers`' chances, over `requests` requests.
    pub(crate) fn new(key: &str, requests: u64, layers: Vec<LayerChances>) -> Self {
        Self {
            format: FORMAT,
            model: key.to_string(),
            requests,
            layers,
        }
    }

    /// Reads the profile at `path` for model `key`: `Ok(None)` when there is none.
    pub(crate) fn read(path: &Path, key: &str) -> Result<Option<Self>, ProfileError> {
        let invalid = |why: String| ProfileError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(invalid(format!(
                    "{} bytes, more than a profile can be",
                    m.len()
                )))
            }
            _ => {}
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ProfileError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let profile: Self =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a profile: {e}")))?;
        if profile.format != FORMAT {
            return Err(invalid(format!(
                "format {} (this build reads {FORMAT})",
                profile.format
            )));
        }
        if profile.model != key {
            return Err(invalid(format!(
                "made for model {}, not this one ({key})",
                profile.model
            )));
        }
        if let Some(l) = profile
            .layers
            .iter()
            .find(|l| l.chances.len() > MAX_EXPERTS)
        {
            return Err(invalid(format!(
                "layer {} lists {} experts (at most {MAX_EXPERTS})",
                l.layer,
                l.chances.len()
            )));
        }
        let bad = profile
            .layers
            .iter()
            .flat_map(|l| &l.chances)
            .find(|c| !c.is_finite() || **c < 0.0 || **c > 1.0);
        if let Some(c) = bad {
            return Err(invalid(format!("chance {c} outside [0, 1]")));
        }
        Ok(Some(profile))
    }

    /// Writes the profile to `path` (creating its folder), replacing the file at once
    /// (written beside it, then renamed), so a reader never sees half a profile.
    pub(crate) fn write(&self, path: &Path) -> Result<(), ProfileError> {
        let failed = |source| ProfileError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let json = serde_json::to_vec(self).map_err(|e| ProfileError::Invalid {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
        let result = std::fs::File::create(&partial)
            .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&partial, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map_err(failed)
    }

    /// Layers `0..n_layers` in the order their expert matrices earn GPU memory: first the
    /// layers whose own hottest `share` of experts (a layer's part of a cache that holds that
    /// share of all experts) holds the least of their picks, i.e. whose routing spreads
    /// widest. Layers the profile does not list count as evenly routed; ties go to the later
    /// layer, so a profile of even routing gives the last layers first.
    pub(crate) fn layers_widest_first(&self, n_layers: u32, share: f64) -> Vec<u32> {
        let share = share.clamp(0.0, 1.0);
        let held = |l: u32| -> f64 {
            let Some(chances) = self
                .layers
                .iter()
                .find(|c| c.layer == l)
                .map(|c| &c.chances)
            else {
                return share;
            };
            let total: f64 = chances.iter().map(|&c| f64::from(c)).sum();
            if chances.is_empty() || total <= 0.0 {
                return share;
            }
            let mut sorted: Vec<f64> = chances.iter().map(|&c| f64::from(c)).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kept = ((sorted.len() as f64 * share).round() as usize).min(sorted.len());
            sorted.iter().take(kept).sum::<f64>() / total
        };
        let mut order: Vec<(f64, u32)> = (0..n_layers).map(|l| (held(l), l)).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
        order.into_iter().map(|(_, l)| l).collect()
    }

    /// The share of picks a cache of `capacity` experts would hold, keeping the hottest
    /// (every expert of every layer ranked by its chance): the profile's predicted hit rate.
    pub fn predicted_hit_rate(&self, capacity: usize) -> f64 {
        self.predicted_hit_rate_without(capacity, &[])
    }

    /// [`Self::predicted_hit_rate`] over the layers but `skipped` (ascending): those whose
    /// experts are not cached (in GPU memory).
    pub(crate) fn predicted_hit_rate_without(&self, capacity: usize, skipped: &[u32]) -> f64 {
        let mut all: Vec<f64> = self
            .layers
            .iter()
            .filter(|l| skipped.binary_search(&l.layer).is_err())
            .flat_map(|l| l.chances.iter().map(|&c| f64::from(c)))
            .collect();
        let total: f64 = all.iter().sum();
        if total <= 0.0 {
            return 0.0;
        }
        all.sort_by(|a, b| b.total_cmp(a));
        all.iter().take(capacity).sum::<f64>() / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_round_trips_and_refuses_another_model() {
        let dir = std::env::temp_dir().join(format!("hypura-profile-test-{}", std::process::id()));
        let key = model_key(b"header", 42);
        assert_ne!(key, model_key(b"header", 43));
        let path = path_in(&dir, &key);
        assert!(ExpertProfile::read(&path, &key).unwrap().is_none());
        let layers = vec![LayerChances {
            layer: 0,
            chances: vec![0.5, 0.25, 0.25, 0.0],
        }];
        let profile = ExpertProfile::new(&key, 10, layers);
        profile.write(&path).unwrap();
        assert_eq!(
            ExpertProfile::read(&path, &key).unwrap(),
            Some(profile.clone())
        );
        // Two of four experts: the two hottest hold 0.75 of the picks.
        assert!((profile.predicted_hit_rate(2) - 0.75).abs() < 1e-9);
        // Layer 0 keeps 0.75 of its picks in half its experts, layers 1 and 2 (not listed)
        // count as even (0.5): they come first, the later one first.
        assert_eq!(profile.layers_widest_first(3, 0.5), vec![2, 1, 0]);
        let other = model_key(b"other", 42);
        let err = ExpertProfile::read(&path, &other).unwrap_err().to_string();
        assert!(err.contains("not this one"), "{err}");
        std::fs::write(&path, b"{").unwrap();
        let err = ExpertProfile::read(&path, &key).unwrap_err().to_string();
        assert!(err.contains("not a profile"), "{err}");
        // More experts than a model may have, or a chance outside [0, 1]: refused.
        for (chances, needle) in [
            (vec![0.0; 1025], "lists 1025 experts"),
            (vec![1.5], "outside"),
        ] {
            let layers = vec![LayerChances { layer: 0, chances }];
            ExpertProfile::new(&key, 1, layers).write(&path).unwrap();
            let err = ExpertProfile::read(&path, &key).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
