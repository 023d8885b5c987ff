//! `LoadOptions::on_progress` reports the resident part's bytes as they are read, ending with
//! all of them.

use std::sync::{Arc, Mutex};

mod common;
use common::{model_path, GEMMA3};

use hypura_core::{Budget, LoadOptions, LoadProgress, Model};

#[test]
fn the_load_reports_its_reads_up_to_the_resident_bytes() {
    // Half the weights (hypura's buffers), and all of them (llama.cpp's buffer types, some of
    // gemma's weights in the repacked layout, which hypura converts as it reads them).
    for budget in [Budget::WeightPercent(50.0), Budget::AllWeights] {
        let path = model_path(GEMMA3);
        let seen: Arc<Mutex<Vec<LoadProgress>>> = Arc::default();
        let log = Arc::clone(&seen);
        let options = LoadOptions::new(&path)
            .budget(budget)
            .context_length(256)
            .threads(2)
            .expert_profiles(None)
            .on_progress(move |p| log.lock().unwrap().push(p));
        let model = Model::load(&options).unwrap();
        let seen = seen.lock().unwrap();
        let last = *seen.last().expect("no progress reported");
        assert_eq!(last.done, last.total, "{budget:?}");
        assert!(last.total > 0, "{budget:?}");
        assert!(
            seen.windows(2).all(|w| w[0].done <= w[1].done),
            "{budget:?}: {seen:?}"
        );
        // What was reported is what the plan holds resident (and was read at load).
        assert!(
            last.total <= model.plan().ram_resident_bytes,
            "{budget:?}: {last:?}"
        );
    }
}
