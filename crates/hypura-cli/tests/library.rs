//! The library's public API on a real model: plans agree with loads, generation hands out
//! whole UTF-8 pieces and stops when the caller says so, a loaded model works from another
//! thread, decode errors are typed, and a whole-process budget holds the process.

mod common;
use common::*;

use std::ops::ControlFlow;

use hypura_core::{
    BatchToken, Budget, DecodeError, GenerateOptions, LoadOptions, Model, Plan, StopReason,
};

fn options(name: &str) -> LoadOptions {
    LoadOptions::new(model(name))
        .budget(Budget::WeightPercent(25.0))
        .context_length(64)
        .threads(2)
        .disk_bandwidth(1e9)
}

#[test]
fn the_plan_is_what_a_load_uses() {
    for name in [SMOLLM2, GEMMA3] {
        let plan = Plan::for_options(&options(name)).unwrap();
        let model = Model::load(&options(name)).unwrap();
        let loaded = model.plan();
        assert_eq!(
            plan.streamed_bytes_per_token,
            loaded.streamed_bytes_per_token
        );
        assert_eq!(plan.ram_resident_bytes, loaded.ram_resident_bytes);
        assert_eq!(plan.groups.len(), loaded.groups.len());
        assert!(model.is_streaming());
    }
}

#[test]
fn generation_stops_when_the_caller_says_so_and_pieces_are_whole_text() {
    let mut model = Model::load(&options(GEMMA3)).unwrap();
    let request = GenerateOptions::new("Once upon a time")
        .max_tokens(12)
        .seed(3)
        .temperature(1.0);
    let mut pieces = Vec::new();
    let stats = model
        .generate(&request, |piece| {
            pieces.push(piece.to_string());
            if pieces.len() == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(stats.stop_reason, StopReason::Caller);
    assert_eq!(pieces.len(), 2);
    assert!(stats.tokens_generated < 12);
    // Uninterrupted, the same request runs to its limit with the same first tokens.
    let full = model
        .generate(&request, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(full.stop_reason, StopReason::MaxTokens);
    assert_eq!(full.tokens[..stats.tokens.len()], stats.tokens[..]);
}

#[test]
fn a_loaded_model_works_from_another_thread() {
    let mut model = Model::load(&options(SMOLLM2)).unwrap();
    let prompt = model.tokenize(PROMPT, true).unwrap();
    let here = model.decode_tokens(&prompt).unwrap().to_vec();
    model.clear();
    let there = std::thread::spawn(move || model.decode_tokens(&prompt).unwrap().to_vec())
        .join()
        .unwrap();
    assert_eq!(here, there);
}

#[test]
fn decode_errors_are_typed_and_leave_the_sequences_as_they_were() {
    let mut model = Model::load(&options(SMOLLM2)).unwrap();
    let n_ctx = model.context_per_sequence();
    let filler = vec![
        BatchToken {
            token: 1,
            seq: 0,
            logits: false
        };
        n_ctx + 1
    ];
    assert!(matches!(
        model.decode(&filler),
        Err(DecodeError::ContextFull { .. })
    ));
    assert_eq!(model.sequence_length(0), Some(0));
    assert!(matches!(model.decode(&[]), Err(DecodeError::EmptyBatch)));
    let bad_seq = [BatchToken {
        token: 1,
        seq: 5,
        logits: true,
    }];
    assert!(matches!(
        model.decode(&bad_seq),
        Err(DecodeError::SequenceOutOfRange { seq: 5, .. })
    ));
    let bad_token = [BatchToken {
        token: -1,
        seq: 0,
        logits: true,
    }];
    assert!(matches!(
        model.decode(&bad_token),
        Err(DecodeError::TokenOutOfRange { .. })
    ));
    assert_eq!(model.decode(&filler[..3]).unwrap().len(), 0);
    assert_eq!(model.sequence_length(0), Some(3));
}

/// `--memory` plans the weights so that the whole process stays within it: its peak resident
/// set, during the load and after, is below the budget.
#[test]
fn a_whole_process_budget_holds_the_process() {
    for (name, memory) in [(SMOLLM2, "150M"), (GEMMA3, "400M")] {
        let stats = run_stats(&model(name), &["--memory", memory], 8);
        let budget = hypura_core::units::parse_bytes(memory).unwrap();
        let peak = u(&stats, "peak_rss_bytes").max(u(&stats, "peak_rss_load_bytes"));
        assert!(
            peak <= budget,
            "{name}: peak RSS {peak} above --memory {budget}"
        );
        assert!(u(&stats, "ram_budget_bytes") < u(&stats, "model_bytes"));
        assert!(u(&stats, "disk_bytes_read") > 0, "{name}: nothing streamed");
    }
}
