//! `hypura run -P N`: N continuations of one prompt decoded together by the engine (one
//! batch per step), and the aggregate rate: where streaming pays beyond memory, since each
//! step reads the streamed weights once for every sequence.

use std::path::PathBuf;
use std::time::Instant;

use hypura_core::units::format_bytes;
use hypura_core::{process, Engine, EngineEvent, GenerateOptions, LoadMode, Model};
use serde_json::json;

use crate::commands::Failure;

/// One step's end: seconds since the start, tokens sampled so far, bytes read so far (from
/// the model file by hypura, and from storage by the process).
#[derive(Clone, Copy, Default)]
struct Mark {
    at_s: f64,
    tokens: u64,
    file_bytes: u64,
    storage_bytes: u64,
}

/// The rate between two marks, tokens per second.
fn rate(from: Mark, to: Mark) -> f64 {
    let s = to.at_s - from.at_s;
    if s > 0.0 {
        (to.tokens - from.tokens) as f64 / s
    } else {
        0.0
    }
}

/// The first mark at or after `at_s` (the last if none): where a phase that began at
/// `at_s`, inside a step, is first whole.
fn mark_from(marks: &[Mark], at_s: f64) -> Mark {
    marks
        .iter()
        .find(|m| m.at_s >= at_s)
        .or(marks.last())
        .copied()
        .unwrap_or_default()
}

/// The last mark at or before `at_s` (the first if none).
fn mark_at(marks: &[Mark], at_s: f64) -> Mark {
    marks
        .iter()
        .take_while(|m| m.at_s <= at_s)
        .last()
        .or(marks.first())
        .copied()
        .unwrap_or_default()
}

/// Generates `n` continuations of `request`'s prompt with `model` (loaded with at least `n`
/// sequences), printing each on its own line (`[i] text`) once all are done, the aggregate
/// figures on stderr, and the statistics to `stats_json`.
pub fn run(
    model: Model,
    request: &GenerateOptions,
    seed: u64,
    n: u32,
    stats_json: Option<&PathBuf>,
) -> Result<(), Failure> {
    let load_s = model.load_stats().load_s;
    let plan = model.plan().clone();
    let mode = model.load_mode();
    let mut engine = Engine::new(model);
    let started = Instant::now();
    let mark = |engine: &Engine| Mark {
        at_s: started.elapsed().as_secs_f64(),
        tokens: engine.tokens_generated(),
        file_bytes: engine.model().stats().bytes_read,
        storage_bytes: process::storage_read_bytes(),
    };
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(engine.submit(request.clone().seed(seed.wrapping_add(u64::from(i))))?);
    }
    let mut marks = vec![mark(&engine)];
    let mut texts = vec![String::new(); ids.len()];
    let mut first_token_s = vec![0.0f64; ids.len()];
    let mut tokens = vec![Vec::new(); ids.len()];
    let mut prompt_tokens = 0;
    while !engine.is_idle() {
        let events = engine.step()?;
        marks.push(mark(&engine));
        for event in events {
            let Some(i) = (match &event {
                EngineEvent::Text { id, .. } | EngineEvent::Finished { id, .. } => {
                    ids.iter().position(|x| x == id)
                }
                _ => None,
            }) else {
                continue;
            };
            match event {
                EngineEvent::Text { text, .. } => texts[i].push_str(&text),
                EngineEvent::Finished {
                    timings,
                    prompt_tokens: p,
                    tokens: t,
                    ..
                } => {
                    tokens[i] = t;
                    first_token_s[i] = (timings.waiting + timings.prompt).as_secs_f64();
                    prompt_tokens = p;
                }
                _ => {}
            }
        }
    }
    for (i, text) in texts.iter().enumerate() {
        println!("[{i}] {}", text.replace('\n', "\\n"));
    }
    let end = *marks.last().unwrap_or(&marks[0]);
    // Decoding proper starts once every sequence has its first token (its prompt done): at
    // the end of the step that sampled the last first token (that step still fed prompts).
    let ttft_s = first_token_s.iter().copied().fold(0.0, f64::max);
    let decode_start = mark_from(&marks, ttft_s);
    let decode_tok_s = rate(decode_start, end);
    let steady_tok_s = rate(mark_at(&marks, (decode_start.at_s + end.at_s) / 2.0), end);
    let decoded = end.tokens - decode_start.tokens;
    let file_bytes = end.file_bytes - decode_start.file_bytes;
    let storage_bytes = end.storage_bytes.saturating_sub(decode_start.storage_bytes);
    let read = if mode == LoadMode::Tiered {
        file_bytes
    } else {
        storage_bytes
    };
    let peak_rss = process::peak_rss_bytes();
    eprintln!(
        "hypura: {n} sequences, {} tokens: {decode_tok_s:.2} tok/s aggregate decode ({steady_tok_s:.2} over its second half), first tokens after {ttft_s:.2} s ({prompt_tokens} prompt tokens each), {} read per token, peak RSS {}, load {load_s:.2} s",
        end.tokens,
        format_bytes(read / decoded.max(1)),
        format_bytes(peak_rss),
    );
    if let Some(path) = stats_json {
        let stats = json!({
            "mode": mode,
            "sequences": n,
            "prompt_tokens": prompt_tokens,
            "tokens_generated": end.tokens,
            "tokens_decoded": decoded,
            "decode_tok_s": decode_tok_s,
            "steady_tok_s": steady_tok_s,
            "time_to_first_token_s": ttft_s,
            "prompt_s": ttft_s,
            "load_s": load_s,
            "disk_bytes_read": file_bytes,
            "storage_bytes_read": storage_bytes,
            "disk_bytes_per_token": read as f64 / decoded.max(1) as f64,
            "peak_rss_bytes": peak_rss,
            "streamed_bytes_per_token": plan.streamed_bytes_per_token,
            // Each step reads the streamed bytes once for all sequences.
            "bound_tok_s": plan.bound_tok_s * f64::from(n),
            // The whole run's stream figures (waits, groups read late or out of order, the
            // expert cache), to see where a step's time and reads went.
            "model_stats": engine.model().stats(),
            "ram_resident_bytes": plan.ram_resident_bytes,
            "gpu_resident_bytes": plan.gpu_resident_bytes,
            "texts": texts,
            "sequence_tokens": tokens,
        });
        std::fs::write(path, serde_json::to_string_pretty(&stats)?)
            .map_err(|e| crate::commands::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
