//! `LoadOptions::on_progress` reports the resident part's bytes as they are read, ending with
//! all of them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hypura_core::{Budget, LoadOptions, LoadProgress, Model};

#[test]
fn the_load_reports_its_reads_up_to_the_resident_bytes() {
    let dir = std::env::var_os("HYPURA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(path.is_file(), "test model {} is missing", path.display());
    let seen: Arc<Mutex<Vec<LoadProgress>>> = Arc::default();
    let log = Arc::clone(&seen);
    let options = LoadOptions::new(&path)
        .budget(Budget::WeightPercent(50.0))
        .context_length(256)
        .threads(2)
        .expert_profiles(None)
        .on_progress(move |p| log.lock().unwrap().push(p));
    let model = Model::load(&options).unwrap();
    let seen = seen.lock().unwrap();
    let last = *seen.last().expect("no progress reported");
    assert_eq!(last.done, last.total);
    assert!(last.total > 0);
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done), "{seen:?}");
    // What was reported is what the plan holds resident (and was read at load).
    assert!(last.total <= model.plan().ram_resident_bytes, "{last:?}");
}
