//! `LoadOptions::on_progress` reports the resident part's bytes as they are read, ending with
//! all of them.

use std::sync::{Arc, Mutex};

mod common;
use common::{model_path, GEMMA3};

use hypura_core::{Budget, LoadOptions, LoadProgress, Model};

#[test]
fn the_load_reports_its_reads_up_to_the_resident_bytes() {
    let path = model_path(GEMMA3);
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
